#!/usr/bin/env python3
"""Find import circles between the modules of each crate.

A module is one file (`foo.rs` or `foo/mod.rs`). Module A depends on module B
when A's non-test code names a path into B: a `use crate::…`, `use super::…`
or `use self::…` tree, or an inline `crate::b::item` path. A module's
`mod child;` declarations and `pub use child::…` re-exports are its own
structure, not a dependency, so a parent that only declares and re-exports
its children is not in a circle with them.

Exit status 1 and one line per circle when any crate has one; 0 otherwise.
Run by `make lint`; `--verbose` prints every crate's module graph.
"""

import os
import re
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def members():
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        return tomllib.load(f)["workspace"]["members"]


def strip_comments_and_tests(text):
    # Drop // comments (not inside strings: good enough for use lines and paths).
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    # Test modules are leaves: cut `#[cfg(test)] mod name {` to its closing brace.
    out = []
    i = 0
    pat = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{")
    while True:
        m = pat.search(text, i)
        if not m:
            out.append(text[i:])
            break
        out.append(text[i : m.start()])
        depth = 1
        j = m.end()
        while j < len(text) and depth:
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
            j += 1
        i = j
    # `#[cfg(test)] mod tests;` pointing at a file: the file is skipped below.
    return "".join(out)


def module_files(src):
    """Map module path tuples to files, from the crate root's tree."""
    mods = {}
    tests = set()

    def walk(path, modpath):
        mods[modpath] = path
        text = open(path, encoding="utf-8").read()
        base = os.path.dirname(path)
        name = os.path.basename(path)
        if name not in ("lib.rs", "main.rs", "mod.rs"):
            base = os.path.join(base, name[:-3])
        for m in re.finditer(
            r"((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text
        ):
            attrs, child = m.group(1), m.group(2)
            explicit = re.search(r'#\[path\s*=\s*"([^"]+)"\]', attrs)
            if explicit:
                cand = [os.path.join(base if name in ("lib.rs", "main.rs", "mod.rs") else os.path.dirname(path), explicit.group(1))]
            else:
                cand = [os.path.join(base, child + ".rs"), os.path.join(base, child, "mod.rs")]
            for c in cand:
                if os.path.exists(c):
                    if "cfg(test)" in attrs:
                        tests.add(modpath + (child,))
                    else:
                        walk(c, modpath + (child,))
                    break

    for root in ("lib.rs", "main.rs"):
        p = os.path.join(src, root)
        if os.path.exists(p):
            walk(p, ())
            break
    return mods


def split_top(s):
    """Split a use-group body on commas at brace depth 0."""
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = re.sub(r"\s+", "", tree)
    tree = re.sub(r"\bas\w+", "", tree)
    i = tree.find("{")
    if i < 0:
        return [tree]
    prefix, body = tree[:i], tree[i + 1 : tree.rfind("}")]
    out = []
    for p in split_top(body):
        for e in expand(p):
            out.append(prefix + e)
    return out


def resolve(segments, here, mods):
    """Resolve a path's segments (relative to `here`) to the deepest module."""
    if not segments:
        return None
    head = segments[0]
    if head == "crate":
        base, rest = (), segments[1:]
    elif head == "super":
        base, rest = here, segments
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    elif head == "self":
        base, rest = here, segments[1:]
    else:
        # A path relative to the current module (a child), as 2018+ allows.
        if here + (head,) in mods:
            base, rest = here, segments
        else:
            return None
    best = base
    cur = base
    for seg in rest:
        cur = cur + (seg,)
        if cur in mods:
            best = cur
        else:
            break
    return best


def deps_of(modpath, path, mods):
    text = strip_comments_and_tests(open(path, encoding="utf-8").read())
    deps = set()
    for m in re.finditer(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", text):
        is_pub = bool(m.group(1))
        for full in expand(m.group(2)):
            segs = [s for s in full.split("::") if s]
            target = resolve(segs, modpath, mods)
            if target is None or target == modpath:
                continue
            # A parent re-exporting its own descendants is structure.
            if is_pub and target[: len(modpath)] == modpath:
                continue
            # A child module's `use super::*` style imports of its parent count.
            deps.add(target)
    for m in re.finditer(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)", text):
        segs = m.group(1).split("::")
        target = resolve(segs, modpath, mods)
        if target is not None and target != modpath:
            deps.add(target)
    return deps


def sccs(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            strong(v)
    return out


def name(crate, mod):
    return crate + ("::" + "::".join(mod) if mod else "")


def main():
    verbose = "--verbose" in sys.argv
    found = 0
    checked = 0
    for member in members():
        src = os.path.join(ROOT, member, "src")
        if not os.path.isdir(src):
            continue
        crate = os.path.basename(member)
        mods = module_files(src)
        graph = {m: deps_of(m, p, mods) for m, p in mods.items()}
        checked += len(mods)
        if verbose:
            for m in sorted(graph):
                print(name(crate, m), "->", ", ".join(name(crate, d) for d in sorted(graph[m])))
        for comp in sccs(graph):
            found += 1
            # Show one concrete edge list for the circle.
            edges = [
                f"{'::'.join(a) or 'lib'} -> {'::'.join(b) or 'lib'}"
                for a in comp
                for b in sorted(graph[a])
                if b in comp
            ]
            print(f"import circle in {crate}: " + "; ".join(edges))
    if found:
        print(f"import-cycles: {found} circle(s) among {checked} modules", file=sys.stderr)
        return 1
    print(f"import-cycles: no circle among {checked} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
