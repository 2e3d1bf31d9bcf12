//! `conduit_claim`: bytes reserved in place for one message.

use crate::boundary::guard;
use crate::failure::Failure;
use crate::publication::{conduit_publication, PublicationHandle};
use std::ffi::c_int;

/// Bytes reserved in place for one message by
/// `conduit_publication_try_claim`: write at most `len` bytes at `data`,
/// then `conduit_claim_commit` (publish) or `conduit_claim_abort` (drop).
///
/// The `private_*` fields belong to the library: do not change them. A
/// zero-initialised claim (`conduit_claim c = {0};`) is "not open": commit
/// and abort reject it with `CONDUIT_INVALID_ARGUMENT`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct conduit_claim {
    /// Where to write the payload (in ring memory or the send buffer).
    /// NULL when the claim is not open.
    pub data: *mut u8,
    /// How many bytes the claim holds (the `len` asked for).
    pub len: usize,
    /// Private: the publication the claim belongs to, NULL when not open.
    pub private_publication: *mut conduit_publication,
    /// Private: which of the publication's claims this is.
    pub private_generation: u64,
}

impl conduit_claim {
    /// A claim that is not open.
    pub(crate) const EMPTY: conduit_claim = conduit_claim {
        data: std::ptr::null_mut(),
        len: 0,
        private_publication: std::ptr::null_mut(),
        private_generation: 0,
    };

    pub(crate) fn open(
        data: *mut u8,
        len: usize,
        publication: *mut conduit_publication,
        generation: u64,
    ) -> conduit_claim {
        conduit_claim {
            data,
            len,
            private_publication: publication,
            private_generation: generation,
        }
    }
}

/// Ends the claim `*c`: takes it out of its publication's slot and resets
/// `*c` to an empty claim.
///
/// # Safety
/// `c` is NULL or points to a `conduit_claim` that is zeroed, reset, or was
/// filled by `conduit_publication_try_claim` on a publication still open.
unsafe fn finish(c: *mut conduit_claim, commit: bool) -> Result<c_int, Failure> {
    // SAFETY: the caller passes NULL or a valid conduit_claim.
    let claim = unsafe { c.as_mut() }.ok_or(Failure::invalid_static("claim is NULL"))?;
    if claim.private_publication.is_null() {
        return Err(Failure::invalid_static(
            "claim is not open: it was never claimed, its claim failed, or it was already committed or aborted",
        ));
    }
    // SAFETY: a non-NULL private_publication was set by try_claim, and the
    // caller guarantees that publication is still open.
    let handle = unsafe { PublicationHandle::from_ptr(claim.private_publication) }?;
    let open = handle.take_claim(claim.private_generation)?;
    *claim = conduit_claim::EMPTY;
    if commit {
        open.commit();
    } else {
        open.abort();
    }
    Ok(0)
}

/// Publishes the message written into the claim `*c`, and resets `*c` to an
/// empty claim. Returns 0, or `CONDUIT_INVALID_ARGUMENT` for a NULL `c` or a
/// claim that is not open (never claimed, its claim failed, or already
/// committed or aborted, through this struct or a copy of it).
///
/// Threads: the thread currently using the claim's publication.
///
/// # Safety
/// `c` is NULL or points to a `conduit_claim` that is zero-initialised or was
/// filled by `conduit_publication_try_claim`; that publication is not closed
/// yet (closing it aborts the claim and ends the struct's usefulness).
#[no_mangle]
pub unsafe extern "C" fn conduit_claim_commit(c: *mut conduit_claim) -> c_int {
    // SAFETY: same contract.
    guard(
        "conduit_claim_commit",
        |code| code,
        || unsafe { finish(c, true) },
    )
}

/// Drops the claim `*c` without publishing anything, and resets `*c` to an
/// empty claim. Returns 0, or `CONDUIT_INVALID_ARGUMENT` as
/// `conduit_claim_commit`.
///
/// Threads: the thread currently using the claim's publication.
///
/// # Safety
/// As `conduit_claim_commit`.
#[no_mangle]
pub unsafe extern "C" fn conduit_claim_abort(c: *mut conduit_claim) -> c_int {
    // SAFETY: same contract.
    guard(
        "conduit_claim_abort",
        |code| code,
        || unsafe { finish(c, false) },
    )
}
