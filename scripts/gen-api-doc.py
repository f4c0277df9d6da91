#!/usr/bin/env python3
"""Generates docs/API.md from the /** */ comments of the public headers.

    python3 scripts/gen-api-doc.py include/outbox/*.h > docs/API.md

Every public function must carry a /** */ comment right before it: the script
exits 1 and names the ones that do not (test api_doc_current runs it and
checks docs/API.md is current). Documented types and macros are included too;
a struct's member comments (/**< */) stay in its code block.
"""
import os
import re
import sys

DOC = re.compile(r"/\*\*(?!<)(.*?)\*/", re.S)
FUNC = re.compile(r"^[A-Za-z_][\w \t\*]*?\b(outbox_\w+)\s*\(", re.M)


def clean(comment):
    """Comment text without its frame: leading stars and the common indent."""
    lines = [re.sub(r"^\s*\*", "", ln, count=1).rstrip() if re.match(r"^\s*\*", ln)
             else ln.rstrip() for ln in comment.strip("\n").split("\n")]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        return ""
    rest = [ln for ln in lines[1:] if ln.strip()]
    indent = min((len(ln) - len(ln.lstrip()) for ln in rest), default=0)
    return "\n".join([lines[0].strip()] + [ln[indent:] for ln in lines[1:]])


def declaration(text, pos):
    """The declaration starting at pos: a #define line, a typedef with a
    body, or anything up to its semicolon."""
    m = re.compile(r"\s*").match(text, pos)
    start = m.end()
    if text.startswith("#define", start):
        end = text.index("\n", start)
        while text.startswith("#define", end + 1):  # a group of macros
            end = text.index("\n", end + 1)
        return text[start:end].strip(), end
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == ";" and depth == 0:
            return text[start:i + 1].strip(), i + 1
        i += 1
    return text[start:].strip(), len(text)


def name_of(decl):
    if decl.startswith("#define"):
        return ", ".join(ln.split()[1] for ln in decl.split("\n"))
    m = re.search(r"\b(outbox_\w+)\s*\(", decl)
    if m and not decl.startswith("typedef"):
        return m.group(1)
    m = re.search(r"}\s*(\w+)\s*;\s*$", decl) or re.search(r"\(\*\s*(\w+)\)", decl) \
        or re.search(r"(\w+)\s*;\s*$", decl)
    return m.group(1) if m else decl.split("\n")[0]


def file_intro(text):
    m = re.match(r"\s*/\*(.*?)\*/", text, re.S)
    return clean(m.group(1)) if m else ""


def strip_comments_for_scan(text):
    return re.sub(r"/\*.*?\*/", lambda m: " " * len(m.group(0)), text, flags=re.S)


def main(paths):
    out = ["# API reference", "",
           "Generated from the header comments of `include/outbox/*.h` by",
           "`scripts/gen-api-doc.py`; do not edit (test `api_doc_current` checks it is",
           "current: run `scripts/gen-man.sh` after changing a header). Link with",
           "`pkg-config --cflags --libs outbox` or CMake's `find_package(outbox)` ->",
           "`outbox::outbox` (see the README).", "",
           "Conventions for every function below: errors are `outbox_err_t` values with",
           "a sentence in `errstr` (`outbox_err_str()` names the code); `_new`/`_destroy`",
           "pairs, `_destroy(NULL)` is a no-op; a function that takes ownership says so,",
           "otherwise arguments are borrowed for the call; functions without a handle",
           "are thread-safe, a handle is used by one thread at a time unless its comment",
           "says otherwise.", ""]
    missing = []
    toc = []
    body = []
    for path in sorted(paths, key=lambda p: (not p.endswith("outbox.h"), p)):
        text = open(path, encoding="utf-8").read()
        rel = "outbox/" + os.path.basename(path)
        body += [f"## {rel}", "", file_intro(text), ""]
        toc.append(f"- [{rel}](#{rel.replace('/', '').replace('.', '')})")
        documented = set()
        consumed = 0
        for m in DOC.finditer(text):
            if m.start() < consumed:  # a member's comment, inside a struct shown whole
                continue
            decl, consumed = declaration(text, m.end())
            if not decl or decl.startswith("/*"):
                continue
            name = name_of(decl)
            documented.add(name)
            body += [f"### `{name}`", "", "```c", decl, "```", "", clean(m.group(1)), ""]
        scan = strip_comments_for_scan(text)
        for f in FUNC.finditer(scan):
            line = scan[f.start():scan.index("\n", f.start())]
            if line.lstrip().startswith(("typedef", "#", "return")):
                continue
            if f.group(1) not in documented:
                missing.append(f"{path}: {f.group(1)}")
    if missing:
        sys.stderr.write("public functions without a /** */ comment:\n  " +
                         "\n  ".join(missing) + "\n")
        return 1
    sys.stdout.write("\n".join(out + toc + [""] + body).rstrip("\n") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
