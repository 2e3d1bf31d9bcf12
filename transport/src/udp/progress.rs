//! Where a UDP channel's state lives: owned by the handle (progress only
//! inside the application's calls), or shared with a background thread that
//! also drives it (`progress=thread`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Error;

/// A channel end's core, with or without a background progress thread.
pub(crate) enum Progress<C> {
    /// Driven only by the application's calls.
    Local(Box<C>),
    /// Also driven by a background thread every period.
    Shared {
        core: Arc<Mutex<C>>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    },
}

fn lock<C>(m: &Mutex<C>) -> MutexGuard<'_, C> {
    // A panic while holding the lock leaves the core usable: its state is
    // only protocol bookkeeping, validated on every use.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<C: Send + 'static> Progress<C> {
    /// A core driven only by the application.
    pub(crate) fn local(core: C) -> Self {
        Progress::Local(Box::new(core))
    }

    /// A core that a thread named `name` also drives: `step` every `period`
    /// until the handle is dropped.
    pub(crate) fn with_thread(
        core: C,
        name: &str,
        period: Duration,
        mut step: impl FnMut(&mut C) + Send + 'static,
    ) -> Result<Self, Error> {
        let core = Arc::new(Mutex::new(core));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (core.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // Relaxed: a stop request carries no data.
                while !s.load(Ordering::Relaxed) {
                    step(&mut lock(&c));
                    std::thread::sleep(period);
                }
            })
            .map_err(Error::Io)?;
        Ok(Progress::Shared {
            core,
            stop,
            thread: Some(thread),
        })
    }
}

impl<C> Progress<C> {
    /// Runs `f` on the core (locking it if a thread shares it).
    #[inline]
    pub(crate) fn with<R>(&mut self, f: impl FnOnce(&mut C) -> R) -> R {
        match self {
            Progress::Local(c) => f(c),
            Progress::Shared { core, .. } => f(&mut lock(core)),
        }
    }

    /// Runs `f` on the core, read-only.
    pub(crate) fn with_ref<R>(&self, f: impl FnOnce(&C) -> R) -> R {
        match self {
            Progress::Local(c) => f(c),
            Progress::Shared { core, .. } => f(&lock(core)),
        }
    }

    /// Stops and joins the background thread, if any; the core stays.
    pub(crate) fn stop_thread(&mut self) {
        if let Progress::Shared { stop, thread, .. } = self {
            // Relaxed: see the load in the thread.
            stop.store(true, Ordering::Relaxed);
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl<C> Drop for Progress<C> {
    fn drop(&mut self) {
        self.stop_thread();
    }
}
