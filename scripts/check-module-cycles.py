#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a cycle.

   scripts/check-module-cycles.py dataplane/src control/src

A module is a top-level file `name.rs` or directory `name/` of the crate's src/ (its
submodules count as the module). An edge a -> b is any `crate::b` path in a's non-test
code, including grouped imports `use crate::{b, c::d}`. Test modules (`mod tests;`,
`#[cfg(test)] mod tests { ... }` at the end of a file) are left out.
"""
import pathlib
import re
import sys


def module_of(src: pathlib.Path, path: pathlib.Path) -> str:
    rel = path.relative_to(src)
    return rel.parts[0].removesuffix(".rs")


def strip_tests(text: str) -> str:
    # Unit tests sit at the end of a file behind #[cfg(test)]; they may use anything.
    m = re.search(r"^#\[cfg\(test\)\]\s*\nmod tests\b", text, re.M)
    return text[: m.start()] if m else text


def edges(src: pathlib.Path):
    graph = {}
    for path in src.rglob("*.rs"):
        mod = module_of(src, path)
        if mod in ("lib", "main") or path.name == "tests.rs" or "tests" in path.parts[len(src.parts):-1]:
            continue
        text = strip_tests(path.read_text())
        deps = graph.setdefault(mod, set())
        for m in re.finditer(r"crate::([a-z_][a-z0-9_]*)", text):
            deps.add(m.group(1))
        for m in re.finditer(r"crate::\{([^}]*)\}", text, re.S):
            for item in m.group(1).split(","):
                name = item.strip().split("::")[0].strip()
                if re.fullmatch(r"[a-z_][a-z0-9_]*", name or "-"):
                    deps.add(name)
        deps.discard(mod)
    mods = set(graph)
    return {m: {d for d in ds if d in mods} for m, ds in graph.items()}


def find_cycle(graph):
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                c = visit(d)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


failed = False
for arg in sys.argv[1:]:
    src = pathlib.Path(arg)
    cycle = find_cycle(edges(src))
    if cycle:
        print(f"{src}: import cycle: {' -> '.join(cycle)}")
        failed = True
    else:
        print(f"{src}: no import cycle among {len(edges(src))} modules")
sys.exit(1 if failed else 0)
