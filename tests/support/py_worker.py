"""One reference-Python process per test suite (test_support.cpp's runPython).

Importing torch and transformers costs seconds per process; a suite that asks Python for a fixture
or a check in every case paid that each time. This worker is started once per suite and runs each
requested script as `python SCRIPT ARGS...` would (runpy, run_name "__main__", sys.argv set), so a
script needs no change to run here or from a shell.

Protocol (one JSON object per line): the request {"script": path, "args": [...]} on stdin, the reply
{"exit": code, "stdout": text, "stderr": text} on the stdout this process was started with. Output
the script writes through Python's sys.stdout/sys.stderr is captured per request; what native code
writes to file descriptor 1 goes to this process's stderr so that it cannot corrupt the replies.

Between requests the worker restores what a script may change for the whole process: the working
directory, the environment, sys.argv and sys.path, torch's default dtype, thread count and the
global RNG state. Fixtures seed their own generators, so running them here or one process each gives
the same bytes.
"""

import contextlib
import io
import json
import os
import runpy
import sys
import traceback


def _torch_state():
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    return torch, torch.get_default_dtype(), torch.get_num_threads(), torch.random.get_rng_state()


def _restore_torch(saved) -> None:
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if saved is None:  # first imported by this script: back to torch's own defaults
        torch.set_default_dtype(torch.float32)
        return
    _, dtype, threads, rng = saved
    torch.set_default_dtype(dtype)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    torch.random.set_rng_state(rng)


def run_one(script: str, args: list) -> dict:
    out, err = io.StringIO(), io.StringIO()
    saved_cwd, saved_env = os.getcwd(), dict(os.environ)
    saved_argv, saved_path = list(sys.argv), list(sys.path)
    saved_torch = _torch_state()
    code = 0
    sys.argv = [script] + [str(a) for a in args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(script, run_name="__main__")
            except SystemExit as e:
                if e.code is None:
                    code = 0
                elif isinstance(e.code, int):
                    code = e.code
                else:  # sys.exit("message"): printed to stderr, exit status 1, as the interpreter does
                    print(e.code, file=sys.stderr)
                    code = 1
            except BaseException:  # noqa: BLE001 - the script's failure is the reply, not the worker's
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv, sys.path[:] = saved_argv, saved_path
        _restore_torch(saved_torch)
    return {"exit": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main() -> int:
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # native writes to fd 1 land in stderr, never in the reply stream
    sys.stdout = sys.stderr
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        reply = run_one(request["script"], request.get("args", []))
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
