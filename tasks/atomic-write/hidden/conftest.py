"""Hidden-test harness for the atomic-write task.

pipe runs this suite with the implementation under test in $PIPE_IMPL_DIR,
which is not on sys.path at interpreter start. It is appended (not inserted)
so an implementation file can never shadow the standard library or pytest.
"""

import os
import subprocess
import sys

import pytest

try:
    IMPL_DIR = os.path.realpath(os.environ["PIPE_IMPL_DIR"])
except KeyError:
    raise pytest.UsageError("PIPE_IMPL_DIR must name the implementation directory") from None

# Importing the implementation must not litter its directory with __pycache__.
sys.dont_write_bytecode = True
if IMPL_DIR not in sys.path:
    sys.path.append(IMPL_DIR)

CLI_TIMEOUT = 30


@pytest.fixture
def aw():
    """The implementation's atomic_write function, imported from PIPE_IMPL_DIR."""
    import atomic_write as module

    where = os.path.realpath(getattr(module, "__file__", "") or "")
    assert where.startswith(IMPL_DIR + os.sep), (
        f"atomic_write was imported from {where!r}, not from the implementation in {IMPL_DIR!r}"
    )
    return module.atomic_write


@pytest.fixture
def impl_env():
    """Environment for `python -m atomic_write` subprocesses: the implementation on PYTHONPATH."""
    env = dict(os.environ)
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = IMPL_DIR + (os.pathsep + existing if existing else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTHONSTARTUP", None)
    return env


@pytest.fixture
def run_cli(impl_env, tmp_path):
    """Run `python -m atomic_write ARGS...` with bytes on stdin; returns CompletedProcess."""

    def run(*args, stdin=b""):
        return subprocess.run(
            [sys.executable, "-m", "atomic_write", *map(str, args)],
            input=stdin,
            capture_output=True,
            cwd=tmp_path,
            env=impl_env,
            timeout=CLI_TIMEOUT,
        )

    return run


@pytest.fixture
def umask():
    """Set the process umask for one test; restored afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_umask(value):
        os.umask(value)

    yield set_umask
    os.umask(saved)

