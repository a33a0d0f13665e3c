"""How a stage ends on Ctrl-C and SIGTERM (`pipelines.common.run_main`): the same cleanup as an
interrupt, one line saying which, and the shell's exit code; the process's SIGTERM handling is
given back afterwards. Real signals sent to this process."""

import os
import signal
import time

import pytest

from pipelines.common import Terminated, exit_code, interrupt_text, run_main


def _wait_for_a_signal():
    time.sleep(30)
    raise AssertionError("no signal arrived")


def test_sigterm_ends_a_stage_like_ctrl_c_with_exit_143(capsys):
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []

    def body():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            _wait_for_a_signal()
        finally:
            cleaned.append(True)  # a `finally` (the cleanup after Ctrl-C) runs after SIGTERM too

    assert run_main("train", body) == 143
    assert cleaned == [True]
    assert capsys.readouterr().err.strip() == "iblip train: terminated (SIGTERM)"
    assert signal.getsignal(signal.SIGTERM) is before  # a library caller's handling is back


def test_ctrl_c_still_exits_130_after_a_sigterm_run(capsys):
    assert run_main("train", lambda: os.kill(os.getpid(), signal.SIGTERM) or _wait_for_a_signal()) == 143

    def body():
        os.kill(os.getpid(), signal.SIGINT)
        _wait_for_a_signal()

    # as in a terminal (a test run started in the background inherits SIGINT ignored)
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert run_main("evaluate", body) == 130  # the SIGTERM of the previous stage is forgotten
    finally:
        signal.signal(signal.SIGINT, ignored)
    assert capsys.readouterr().err.strip().splitlines()[-1] == "iblip evaluate: interrupted"


@pytest.mark.parametrize("exc, text, code", [(KeyboardInterrupt(), "interrupted", 130),
                                              (Terminated("signal 15"), "terminated (SIGTERM)", 143)])
def test_interrupt_words_and_codes(exc, text, code):
    assert interrupt_text(exc) == text and exit_code(exc) == code
