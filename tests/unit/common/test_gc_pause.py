"""The import's pause of the cyclic collector: nested and overlapping pauses resume it once,
at the end of the last, and never turn on a collector that was off."""

from __future__ import annotations

import gc

from libs.common.gc_pause import gc_paused


def test_overlapping_pauses_resume_the_collector_after_the_last() -> None:
    assert gc.isenabled()
    first = gc_paused()
    second = gc_paused()
    first.__enter__()
    assert not gc.isenabled()
    second.__enter__()
    first.__exit__(None, None, None)  # two imports in one loop: the first ends first
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_an_error_in_the_block_still_resumes_it() -> None:
    try:
        with gc_paused():
            raise RuntimeError("row check failed")
    except RuntimeError:
        pass
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
