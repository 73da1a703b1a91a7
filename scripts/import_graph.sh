#!/usr/bin/env bash
# Lists the import edges between the modules of one source folder and
# fails when they form a cycle.
#
#   scripts/import_graph.sh src/admin [src/rules ...]
#
# A node is a module of the folder: `mod` (the folder's mod.rs) or a file
# `x.rs` (with whatever `x/` or `#[path]` files it includes). An edge
# A -> B is any path in A that names B: `use super::b::..`, `super::b::f()`,
# `crate::admin::b::..`, a bare `b::` in mod.rs, or a `super::Name` /
# `crate::admin::Name` that is not a module (that names `mod` itself).
# Declaring a child (`mod b;`) is not an edge. Test modules (`#[cfg(test)]
# mod tests`) are nodes of their own (`x::tests`): nothing depends on them,
# so they cannot close a cycle; their edges are listed all the same.
# Comments, doc links and string literals are ignored.
#
# Output: one `from -> to` line per edge (with the first place it is seen),
# then each cycle found. Exit 0 without cycles, 1 with, 2 on bad usage.
set -euo pipefail

if [ $# -eq 0 ]; then
    echo "usage: $0 FOLDER..." >&2
    exit 2
fi

exec python3 - "$@" <<'PY'
import os, re, sys

def strip(text):
    """Blanks comments, strings and char literals, keeping newlines."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i): depth, i = depth + 1, i + 2
                elif text.startswith("*/", i): depth, i = depth - 1, i + 2
                else:
                    if text[i] == "\n": out.append("\n")
                    i += 1
        elif (m := re.match(r'b?r(#*)"', text[i:])) and (i == 0 or not (text[i-1].isalnum() or text[i-1] == "_")):
            end = text.find('"' + m.group(1), i + m.end())
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""' + "\n" * text.count("\n", i, end)); i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j)); i = j + 1
        elif c == "'" and (m := re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'\n])'", text[i:])):
            out.append("' '"); i += m.end()
        else:
            out.append(c); i += 1
    return "".join(out)

def use_paths(tree):
    """Expands a use tree (`a::{b, c::d as e}`) into its paths."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    def split_top(s):
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "{": depth += 1
            elif ch == "}": depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur); cur = ""
            else:
                cur += ch
        if cur: parts.append(cur)
        return parts
    def expand(s):
        k = s.find("{")
        if k < 0:
            return [s]
        prefix, inner = s[:k], s[k + 1:s.rfind("}")]
        res = [prefix + q for p in split_top(inner) for q in expand(p)]
        return res or [prefix.rstrip(":")]
    return expand(tree)

def scan_folder(folder):
    folder = folder.rstrip("/")
    rel = os.path.relpath(folder, "src").split(os.sep)
    crate_prefix = rel if rel != ["."] else []
    children = sorted(f[:-3] for f in os.listdir(folder)
                      if f.endswith(".rs") and f != "mod.rs")
    # Files pulled in with #[path = ".."] belong to their includer, as a child module.
    included = {}
    for ch in children + ["mod"]:
        path = os.path.join(folder, ch + ".rs")
        raw = open(path).read()
        for m in re.finditer(r'((?:#\[[^\]]*\]\s*)*)#\[path\s*=\s*"([^"]+)"\]\s*((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;', raw):
            attrs = m.group(1) + m.group(3)
            included[os.path.normpath(os.path.join(folder, m.group(2)))] = (ch, m.group(4), "cfg(test)" in attrs)
    modules = [c for c in children if os.path.join(folder, c + ".rs") not in included]
    edges = {}  # (from, to) -> first place

    def add(frm, to, place):
        if frm != to:
            edges.setdefault((frm, to), place)

    def resolve(base, path, frm_node, place):
        segs = [s for s in path.split("::") if s]
        if not segs: return
        if segs[0] == "crate":
            if segs[1:1 + len(crate_prefix)] != crate_prefix: return
            at, rest = [], segs[1 + len(crate_prefix):]
        elif segs[0] in ("super", "self"):
            at = list(base)
            while segs and segs[0] in ("super", "self"):
                if segs.pop(0) == "super":
                    if not at: return  # leaves the folder
                    at.pop()
            rest = segs
        else:
            if base: return  # a bare path outside mod.rs names a crate or a child
            if segs[0] not in modules or len(segs) < 2: return
            at, rest = [], segs
        if at:
            to = at[0]
            if len(at) >= 2 and at[1] == "tests": to = at[0] + "::tests"
        elif rest and rest[0] in modules:
            to = rest[0]
        else:
            to = "mod"
        add(frm_node, to, place)

    def scan_file(path, base, test_base):
        """base: the file's module path inside the folder; test_base: the
        node its code counts for when it is a test module."""
        text = strip(open(path).read())
        line_of = lambda pos: text.count("\n", 0, pos) + 1
        shown = os.path.relpath(path)
        # Inline modules `mod name { .. }`: their spans and whether they are tests.
        stack, depth, spans = [], 0, []
        mod_open = {m.end() - 1: (m.group(2), "cfg(test)" in (m.group(1) or ""))
                    for m in re.finditer(r"((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*\{", text)}
        for i, ch in enumerate(text):
            if ch == "{":
                depth += 1
                if i in mod_open:
                    stack.append((depth, mod_open[i], i))
            elif ch == "}":
                if stack and stack[-1][0] == depth:
                    d, (name, is_test), start = stack.pop()
                    spans.append((start, i, [s[1][0] for s in stack] + [name], is_test or any(s[1][1] for s in stack)))
                depth -= 1

        def context(pos):
            best = None
            for start, end, names, is_test in spans:
                if start < pos < end and (best is None or start > best[0]):
                    best = (start, names, is_test)
            if best is None:
                return base, test_base
            names, is_test = best[1], best[2]
            node = test_base
            if is_test and not test_base.endswith("::tests"):
                node = (base[0] if base else "mod") + "::tests"
            return base + names, node

        consumed = []
        for m in re.finditer(r"(?<![\w:])(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", text):
            b, node = context(m.start())
            for p in use_paths(m.group(1)):
                resolve(b, p, node, f"{shown}:{line_of(m.start())}")
            consumed.append((m.start(), m.end()))
        def in_use(pos):
            return any(s <= pos < e for s, e in consumed)
        for m in re.finditer(r"(?<![\w:])((?:super|self|crate)(?:::\w+)+|[a-z_]\w*::\w+)", text):
            if in_use(m.start()): continue
            b, node = context(m.start())
            resolve(b, m.group(1), node, f"{shown}:{line_of(m.start())}")

    scan_file(os.path.join(folder, "mod.rs"), [], "mod")
    for c in modules:
        scan_file(os.path.join(folder, c + ".rs"), [c], c)
        sub = os.path.join(folder, c)
        if os.path.isdir(sub):
            for root, _, files in os.walk(sub):
                for f in sorted(files):
                    if not f.endswith(".rs"): continue
                    p = os.path.join(root, f)
                    if p in included: continue
                    inner = os.path.relpath(p, sub)[:-3].split(os.sep)
                    inner = [x for x in inner if x != "mod"]
                    scan_file(p, [c] + inner, c)
    for p, (owner, name, is_test) in included.items():
        b = [] if owner == "mod" else [owner]
        node = (owner + "::tests") if is_test else owner
        scan_file(p, b + [name], node)
    return ["mod"] + modules, edges

def cycles(nodes, edges):
    graph = {n: sorted({t for (f, t) in edges if f == n and t in nodes}) for n in nodes}
    index, low, on, stack, sccs, counter = {}, {}, set(), [], [], [0]
    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: sccs.append(sorted(comp))
    for n in nodes:
        if n not in index: visit(n)
    found = []
    for comp in sccs:
        # One concrete loop through the component, from its first node.
        start, path, seen = comp[0], [comp[0]], {comp[0]}
        def walk(v):
            for w in graph[v]:
                if w == start: return True
                if w in comp and w not in seen:
                    seen.add(w); path.append(w)
                    if walk(w): return True
                    path.pop()
            return False
        walk(start)
        found.append((comp, path + [start]))
    return found

status = 0
for folder in sys.argv[1:]:
    if not os.path.isfile(os.path.join(folder, "mod.rs")):
        print(f"{folder}: no mod.rs", file=sys.stderr); sys.exit(2)
    nodes, edges = scan_folder(folder)
    print(f"== {folder}: {len(nodes)} modules, {len(edges)} edges")
    for (f, t), place in sorted(edges.items()):
        print(f"  {f} -> {t}    ({place})")
    found = cycles(nodes, edges)
    if not found:
        print(f"  no cycles")
    for comp, loop in found:
        status = 1
        print(f"  CYCLE among {{{', '.join(comp)}}}, e.g. {' -> '.join(loop)}")
        inside = sorted((f, t) for (f, t) in edges if f in comp and t in comp)
        mutual = [f"{f} <-> {t}" for (f, t) in inside if f < t and (t, f) in edges]
        print(f"    edges inside: {', '.join(f'{f} -> {t}' for f, t in inside)}")
        if mutual:
            print(f"    direct pairs: {', '.join(mutual)}")
sys.exit(status)
PY
