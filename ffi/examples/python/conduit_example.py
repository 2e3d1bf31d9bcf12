#!/usr/bin/env python3
"""conduit from Python through the C ABI (ctypes): publish and receive over shm.

    python3 conduit_example.py [--lib PATH/libconduit.so] [--dir DIR] [--count N]

The library is found with --lib, else $CONDUIT_LIB, else target/release or
target/debug of this repository. The example opens a subscription and a
publication on one shm: channel, sends N messages (some through in-place
claims, some of zero length), receives and checks them all, and shows how a
bad call reports its status code and message. Exits 0 on success.
"""

import argparse
import ctypes
import os
import sys
import tempfile
import time
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char_p, c_int, c_int64, c_size_t,
                    c_uint8, c_uint32, c_uint64, c_void_p)

# Status codes (conduit.h).
CONDUIT_BACK_PRESSURED = -1
CONDUIT_NOT_CONNECTED = -2
CONDUIT_INVALID_ARGUMENT = -4


class Claim(Structure):
    """conduit_claim: write at most `len` bytes at `data`, then commit."""
    _fields_ = [("data", POINTER(c_uint8)), ("len", c_size_t),
                ("private_publication", c_void_p), ("private_generation", c_uint64)]


HANDLER = CFUNCTYPE(None, c_void_p, c_uint32, POINTER(c_uint8), c_size_t)


def load(path=None):
    """Loads libconduit and declares the functions used here."""
    candidates = [path, os.environ.get("CONDUIT_LIB")]
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    for profile in ("release", "debug"):
        candidates.append(os.path.join(root, "target", profile, "libconduit.so"))
    for candidate in candidates:
        if candidate and os.path.exists(candidate):
            lib = ctypes.CDLL(candidate)
            break
    else:
        sys.exit("libconduit.so not found: build it (cargo build --release -p conduit-ffi) "
                 "or pass --lib / set CONDUIT_LIB")
    sigs = {
        "conduit_version": ([], c_char_p),
        "conduit_last_error": ([], c_char_p),
        "conduit_status_string": ([c_int], c_char_p),
        "conduit_publication_open": ([c_char_p], c_void_p),
        "conduit_publication_offer": ([c_void_p, c_uint32, c_void_p, c_size_t], c_int64),
        "conduit_publication_try_claim": ([c_void_p, c_uint32, c_size_t, POINTER(Claim)], c_int),
        "conduit_claim_commit": ([POINTER(Claim)], c_int),
        "conduit_claim_abort": ([POINTER(Claim)], c_int),
        "conduit_publication_is_connected": ([c_void_p], c_int),
        "conduit_publication_flush": ([c_void_p, c_int64], c_int),
        "conduit_publication_close": ([c_void_p], None),
        "conduit_subscription_open": ([c_char_p], c_void_p),
        "conduit_subscription_poll": ([c_void_p, HANDLER, c_void_p, c_int], c_int),
        "conduit_subscription_close": ([c_void_p], None),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res
    return lib


class ConduitError(Exception):
    def __init__(self, lib, call, code):
        self.code = code
        status = lib.conduit_status_string(code).decode()
        super().__init__(f"{call}: {status}: {lib.conduit_last_error().decode()}")


class Publication:
    def __init__(self, lib, uri):
        self.lib = lib
        self.handle = lib.conduit_publication_open(uri.encode())
        if not self.handle:
            raise ConduitError(lib, "open", CONDUIT_INVALID_ARGUMENT)

    def offer(self, type_id, payload, deadline_s=10.0):
        """Copies `payload` (bytes) into a message; retries while back-pressured."""
        end = time.monotonic() + deadline_s
        while True:
            rc = self.lib.conduit_publication_offer(self.handle, type_id, payload, len(payload))
            if rc >= 0:
                return rc
            if rc not in (CONDUIT_BACK_PRESSURED, CONDUIT_NOT_CONNECTED) or time.monotonic() > end:
                raise ConduitError(self.lib, "offer", rc)

    def claim_and_commit(self, type_id, payload):
        """Writes `payload` in place through a claim."""
        claim = Claim()
        rc = self.lib.conduit_publication_try_claim(self.handle, type_id, len(payload),
                                                     ctypes.byref(claim))
        if rc != 0:
            return rc
        if payload:
            ctypes.memmove(claim.data, payload, len(payload))
        return self.lib.conduit_claim_commit(ctypes.byref(claim))

    def is_connected(self):
        return self.lib.conduit_publication_is_connected(self.handle) == 1

    def flush(self, timeout_ms):
        return self.lib.conduit_publication_flush(self.handle, timeout_ms)

    def close(self):
        self.lib.conduit_publication_close(self.handle)
        self.handle = None


class Subscription:
    def __init__(self, lib, uri):
        self.lib = lib
        self.handle = lib.conduit_subscription_open(uri.encode())
        if not self.handle:
            raise ConduitError(lib, "open", CONDUIT_INVALID_ARGUMENT)
        self.inbox = []
        # Keep the callback object alive as long as the subscription.
        self._handler = HANDLER(self._on_message)

    def _on_message(self, _user, type_id, data, length):
        # `data` is valid only during the call: copy it out.
        self.inbox.append((type_id, ctypes.string_at(data, length) if length else b""))

    def poll(self, limit=64):
        n = self.lib.conduit_subscription_poll(self.handle, self._handler, None, limit)
        if n < 0:
            raise ConduitError(self.lib, "poll", n)
        return n

    def close(self):
        self.lib.conduit_subscription_close(self.handle)
        self.handle = None


def payload_of(i):
    return bytes((i * 7 + j) & 0xFF for j in range(i % 50))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib")
    parser.add_argument("--dir", help="directory of the ring files (default: a temporary one)")
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()

    lib = load(args.lib)
    print(f"libconduit {lib.conduit_version().decode()}")

    # A bad call: a status code and a message, no crash.
    assert lib.conduit_publication_open(b"nope://") is None
    print(f"bad URI refused: {lib.conduit_last_error().decode()}")
    rc = lib.conduit_publication_offer(None, 1, None, 0)
    assert rc == CONDUIT_INVALID_ARGUMENT, rc
    print(f"NULL publication refused: {lib.conduit_status_string(rc).decode()}")

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"shm:python-example?dir={args.dir or tmp}&capacity=64k"
        sub = Subscription(lib, uri)
        pub = Publication(lib, uri)
        deadline = time.monotonic() + 10
        while not pub.is_connected():
            sub.poll()
            if time.monotonic() > deadline:
                sys.exit("the subscription never attached")

        received = 0
        for i in range(args.count):
            payload = payload_of(i)
            if i % 10 == 0:
                while (rc := pub.claim_and_commit(100 + i % 5, payload)) != 0:
                    if rc not in (CONDUIT_BACK_PRESSURED, CONDUIT_NOT_CONNECTED):
                        raise ConduitError(lib, "claim", rc)
                    sub.poll()
            else:
                while True:
                    try:
                        pub.offer(100 + i % 5, payload, deadline_s=0)
                        break
                    except ConduitError as e:
                        if e.code not in (CONDUIT_BACK_PRESSURED, CONDUIT_NOT_CONNECTED):
                            raise
                        sub.poll()  # make room: this process is also the reader
        deadline = time.monotonic() + 10
        while len(sub.inbox) < args.count and time.monotonic() < deadline:
            sub.poll()
        for i, (type_id, data) in enumerate(sub.inbox):
            if type_id != 100 + i % 5 or data != payload_of(i):
                sys.exit(f"message {i} differs: type {type_id}, {len(data)} bytes")
            received += 1
        if received != args.count:
            sys.exit(f"received {received} of {args.count}")
        assert pub.flush(1000) == 0
        pub.close()
        sub.close()
    print(f"python: sent {args.count}, received {received}, all checked")


if __name__ == "__main__":
    main()
