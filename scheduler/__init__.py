"""APScheduler wiring: decides only *when*; every job enqueues a dramatiq message and returns."""
