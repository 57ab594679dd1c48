"""Builds a Python policy file into a cascade:policy component with componentize-py.

    python build.py POLICY.py -o OUT.wasm [--wit DIR] [--componentize-py PATH]

Run by `cascade policy build` with the policy tools' Python (`.cache/policy-venv`, made by set-up
from plugins/python/requirements.txt). Before anything is compiled the file (and every helper
module beside it) is parsed: a syntax error, an import of a module that needs a capability the
host never gives (network, processes, threads), or a file that defines no role or several is
refused here with the file and line. The role comes from what the file defines: `decide` (router),
`score_text` (text scorer) or `fuse` (fuser). componentize-py then runs the module's top level once
at build time (an exception there fails the build with its traceback) and snapshots the
interpreter into the component.
"""

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONTRACT = HERE.parent.parent / "wit" / "v1.2.0"

ROLES = {"decide": "router", "score_text": "text-scorer", "fuse": "fuser"}
WORLDS = {"router": "router-component", "text-scorer": "text-scorer-component", "fuser": "fuser-component"}
CLASSES = {"router": "Router", "text-scorer": "TextScorer", "fuser": "Fuser"}

# modules that only work with a capability components never get; importing one is refused
DENIED = {
    "network": ["socket", "ssl", "select", "selectors", "asyncio", "http", "urllib", "ftplib", "smtplib",
                "poplib", "imaplib", "socketserver", "xmlrpc", "email.mime", "requests", "httpx", "aiohttp"],
    "processes": ["subprocess", "multiprocessing", "pty", "signal"],
    "threads": ["threading", "_thread", "concurrent"],
    "native code": ["ctypes", "cffi"],
}


class Refused(Exception):
    pass


def denied(module: str):
    for why, names in DENIED.items():
        for n in names:
            if module == n or module.startswith(n + "."):
                return why
    return None


def parse(path: Path) -> ast.Module:
    text = path.read_text(encoding="utf-8")
    try:
        return ast.parse(text, filename=str(path))
    except SyntaxError as e:
        raise Refused(f"{path}:{e.lineno}:{e.offset}: SyntaxError: {e.msg}") from None


def check_imports(path: Path, tree: ast.Module) -> None:
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for n in names:
            why = denied(n)
            if why:
                raise Refused(
                    f"{path}:{node.lineno}: imports {n!r}, which needs {why}; policies run without "
                    "network, processes, threads or files (ask the host through cascade_policy instead)"
                )


def role_of(path: Path, tree: ast.Module) -> str:
    found = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ROLES]
    if not found:
        raise Refused(f"{path}: defines none of decide (router), score_text (text scorer), fuse (fuser)")
    if len(found) > 1:
        raise Refused(f"{path}: defines {', '.join(found)}; a component has one role, so one file per role")
    return ROLES[found[0]]


def build(src: Path, out: Path, wit: Path, tool: str) -> str:
    if src.suffix != ".py" or not src.is_file():
        raise Refused(f"{src}: not a Python file")
    tree = parse(src)
    role = role_of(src, tree)
    check_imports(src, tree)
    for helper in sorted(src.parent.glob("*.py")):
        if helper != src:
            check_imports(helper, parse(helper))
    if not src.stem.isidentifier():
        raise Refused(f"{src}: the file name must be a Python module name")
    with tempfile.TemporaryDirectory(prefix="cascade-py-") as tmp:
        entry = Path(tmp) / "_cascade_entry.py"
        entry.write_text(
            f"import {src.stem} as _policy\n"
            "from cascade_policy._bridge import exports as _exports\n"
            f"Meta, {CLASSES[role]} = _exports(_policy, {role!r})\n"
        )
        part = out.with_name(out.name + ".part")
        cmd = [tool, "-d", str(wit), "-w", WORLDS[role], "componentize", "_cascade_entry",
               "-p", tmp, "-p", str(src.parent.resolve()), "-p", str(HERE), "-o", str(part)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            part.unlink(missing_ok=True)
            detail = (r.stderr or r.stdout).strip()
            raise Refused(f"{src}: componentize-py failed:\n{detail}")
        os.replace(part, out)
    return role


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--wit", type=Path, default=CONTRACT, help="the contract's WIT folder (default: the current one)")
    ap.add_argument("--componentize-py", default=None, help="the componentize-py program (default: beside this Python)")
    ap.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    a = ap.parse_args(argv)
    tool = a.componentize_py or str(Path(sys.executable).parent / "componentize-py")
    if not Path(tool).exists() and not shutil.which(tool):
        print(f"error: {tool} not found; run `make setup` (it installs the policy tools)", file=sys.stderr)
        return 2
    try:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        role = build(a.source, a.out, a.wit, tool)
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not a.quiet:
        print(f"{a.out}: {role} ({a.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
