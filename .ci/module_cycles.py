#!/usr/bin/env python3
"""Import cycles between the modules of a crate's `src/` (default: norm-runtime).

A module is a file under src/ (`kernels/exec.rs` is `kernels::exec`; `mod.rs` and
`lib.rs` name their directory). An edge A -> B is any path in A's code (comments
stripped) that names B: `crate::b::...`, `super::b` (resolved against A's parent), or
a name lib.rs re-exports from B (`crate::Float` is an edge to `float`). Edges to a
module's own ancestors (their `mod` declarations and re-exports) are ignored. Prints every strongly connected component with more
than one module and exits 1 if there is one.
"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "norm-runtime/src")
mods = {}
for f in sorted(root.rglob("*.rs")):
    rel = f.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    mods["::".join(parts)] = f

def strip(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(l.split("//")[0] for l in text.splitlines())

def resolve(base, path):
    """The longest known module named by `path` (a list of segments) from `base`."""
    best = None
    for k in range(1, len(path) + 1):
        name = "::".join(base + path[:k])
        if name in mods:
            best = name
    return best

# Names that lib.rs re-exports from one of the crate's modules (`pub use float::Float;`,
# `pub use error::NormError;`): `crate::Float` is an edge to `float`.
reexports = {}
lib = strip(mods[""].read_text()) if "" in mods else ""
for path, group in re.findall(r"pub use (?:crate::)?([\w:]+?)::(\{[^}]*\}|\w+);", lib):
    target = resolve([], path.split("::"))
    if target:
        for name in re.findall(r"\w+", group):
            reexports[name] = target

edges = {m: set() for m in mods}
for m, f in mods.items():
    code = strip(f.read_text())
    me = m.split("::") if m else []
    parent = me[:-1]
    # Paths: crate::a::b, super::a::b, and `use` groups one level deep: use crate::{a, b::c}.
    for kind, rest in re.findall(r"\b(crate|super)((?:::\{[^}]*\}|::\w+)+)", code):
        base = [] if kind == "crate" else parent
        segs = re.findall(r"\{[^}]*\}|\w+", rest)
        heads = []
        prefix = []
        for s in segs:
            if s.startswith("{"):
                for item in s[1:-1].split(","):
                    item = item.strip()
                    if item:
                        heads.append(prefix + [w for w in re.findall(r"\w+", item) if w != "self"])
                break
            prefix.append(s)
        else:
            heads.append(prefix)
        for h in heads:
            target = resolve(base, h)
            if target is None and kind == "crate" and h and h[0] in reexports:
                target = reexports[h[0]]
            if target is not None and target != m and not m.startswith(target + "::") and target != "":
                edges[m].add(target)

# Tarjan's strongly connected components.
index, low, stack, on, sccs = {}, {}, [], set(), []
def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        sccs.append(comp)
sys.setrecursionlimit(10000)
for v in edges:
    if v not in index:
        visit(v)
cycles = [c for c in sccs if len(c) > 1]
if "-v" in sys.argv:
    for m in sorted(edges):
        print(f"{m or 'lib'} -> {', '.join(sorted(edges[m])) or '-'}")
for c in cycles:
    print("cycle:", " <-> ".join(sorted(c)))
print(f"{len(mods)} modules, {sum(len(e) for e in edges.values())} edges, {len(cycles)} cycles")
sys.exit(1 if cycles else 0)
