"""The command line in this process: `run_cli(*args)` is `python -m bharateo *args` without a
new interpreter (each one imports torch again: about 1.7 CPU-seconds), returning what
subprocess.run would (returncode, stdout, stderr). An exception the CLI lets escape fails the
test here, where a subprocess would print a traceback."""
from __future__ import annotations

import contextlib
import io
import subprocess

import pytest


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """bharateo.cli.main(args) with `env` added to the environment for the call; stdout and
    stderr captured as text. argparse's exits (--help: 0, a bad flag: 2) are return codes."""
    from bharateo.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
