#!/usr/bin/env python3
"""Fails if a dependency of a published crate declares a newer Rust than ours.

Reads `cargo metadata` on stdin. The workspace's `rust-version` is a promise to users:
every crate they can depend on must build with that Rust, so every package reachable
through normal and build dependencies of a published member (for this platform) must
declare a `rust-version` no newer than ours, or none. Dev-dependencies are not part of the
promise: they build only our own tests.
"""
import json
import sys


def version(text):
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    msrv = version(sys.argv[1])
    meta = json.load(sys.stdin)
    members = set(meta["workspace_members"])
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    published = [i for i in members if packages[i].get("publish") is None]
    via = {}
    todo = list(published)
    seen = set()
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        seen.add(pkg)
        for dep in nodes[pkg]["deps"]:
            kinds = {k["kind"] for k in dep["dep_kinds"]}
            if kinds == {"dev"}:
                continue
            via.setdefault(dep["pkg"], pkg)
            todo.append(dep["pkg"])
    newer = []
    for pkg in sorted(seen - members, key=lambda i: packages[i]["name"]):
        declared = packages[pkg].get("rust_version")
        if declared and version(declared) > msrv:
            p = packages[pkg]
            newer.append(f"  {p['name']} {p['version']} needs Rust {declared}"
                         f" (through {packages[via[pkg]]['name']})")
    names = sorted(packages[i]["name"] for i in published)
    if newer:
        print(f"MSRV {sys.argv[1]} is not true for the published crates:")
        print("\n".join(newer))
        sys.exit(1)
    print(f"MSRV {sys.argv[1]}: {len(seen - members)} dependencies of {', '.join(names)}"
          " declare no newer Rust")


main()
