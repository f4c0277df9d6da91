#!/usr/bin/env python3
"""SQL built from strings: finds every place in C sources where SQL text is
formatted or concatenated with a value, and fails on any that the allowlist
does not name.

  sql_param_scan.py [--allowlist FILE] PATH...

Three kinds of site are found (per file and enclosing function):

  format    a printf-style call (snprintf, asprintf, outbox__buf_printf, ...)
            whose format text looks like SQL and has a conversion (%s, %d,
            %lld, "%" PRId64, ...): a value spliced into SQL text.
  concat    a function that appends SQL-looking literal text with strcat,
            strncat, outbox__buf_add(s) and also appends a non-literal value.
  template  a SQL-looking literal with a {NAME} placeholder that code fills
            in later (the SQL is completed by string substitution).

Values must be parameters ($1, $2 with PQexecParams/PQprepare). A site that
must build text (an identifier from the configuration, which SQL cannot take
as a parameter) is allowed only by an allowlist line

  path  function  kind  count  reason

(path relative to the repository root; function "-" for file scope; count
the number of such sites in that function). The reason must say how the
spliced text is validated (checked against [a-z0-9_], PQescapeIdentifier,
an integer, a constant of the code). A function with more sites than its
line says, an unlisted one, or a line that matches nothing fails the check.
Exit 0 = clean, 1 = violations, 2 = usage error.
"""
import os
import re
import sys

FORMATTERS = {
    "snprintf", "vsnprintf", "sprintf", "vsprintf", "asprintf", "vasprintf",
    "outbox__buf_printf", "outbox__buf_vprintf", "dprintf", "g_strdup_printf",
}
CONCATS = {"strcat", "strncat", "strcpy", "strncpy", "stpcpy", "strlcat", "strlcpy", "outbox__buf_add",
           "outbox__buf_adds"}

# SQL shapes, anywhere in the text, any case.
SQL_ANY = re.compile(
    r"\bselect\s+(distinct\s+)?[\w.()*]+(\s*,\s*[\w.()*]+)*\s+from\b"
    r"|\bselect\s+[a-z_][\w.]*\s*\(|\binsert\s+into\b"
    r"|\bupdate\s+\S+\s+set\b|\bdelete\s+from\b|\bmerge\s+into\b"
    r"|\b(create|alter|drop)\s+(unique\s+|temp(orary)?\s+)?(table|index|database|role|user|schema"
    r"|view|function|procedure|sequence|trigger|extension|type|publication|subscription)\b"
    r"|\bon\s+conflict\b|\bpg_[a-z_]+\s*\(",
    re.I)
# Keywords people write in upper case in SQL and rarely elsewhere.
SQL_UPPER = re.compile(
    r"\bSELECT\b[\s\S]*\bFROM\b|\b(WHERE|VALUES|ORDER BY|GROUP BY|RETURNING|INNER JOIN|LEFT JOIN|FOR UPDATE|SKIP LOCKED"
    r"|NOT EXISTS)\b")
# A statement's first word (upper case: "COMMIT failed" in a message is no SQL,
# but a format string that starts with it is).
SQL_START = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|SET|RESET|LISTEN|UNLISTEN|NOTIFY"
    r"|TRUNCATE|VACUUM|ANALYZE|GRANT|REVOKE|COPY|LOCK|DISCARD|PREPARE|EXECUTE|DECLARE|FETCH"
    r"|COMMENT ON|REINDEX|CLUSTER|CALL|DO)\b")
CONVERSION = re.compile(r"%(?!%)[-+ #0]*(\d+|\*)?(\.(\d+|\*))?(hh|h|ll|l|L|z|j|t)?[diouxXsScpeEfgG]")
PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def looks_like_sql(text):
    return bool(SQL_ANY.search(text) or SQL_UPPER.search(text) or SQL_START.search(text))


def strip_comments(src):
    """Comments become spaces (newlines kept); strings and chars are kept."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if c == "/" and i + 1 < n and src[i + 1] == "*":
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == "/" and i + 1 < n and src[i + 1] == "/":
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            out.append(src[i:j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def skip_string(s, i):
    """i at a quote; returns the index after the closing quote."""
    q, j = s[i], i + 1
    while j < len(s) and s[j] != q:
        j += 2 if s[j] == "\\" else 1
    return j + 1


def regions(s):
    """(name, start, end) of each top-level brace block: the function's name,
    or "-" for other file-scope blocks (initialisers, structs)."""
    out, i, depth, start, name = [], 0, 0, 0, "-"
    while i < len(s):
        c = s[i]
        if c in "\"'":
            i = skip_string(s, i)
            continue
        if c == "{":
            if depth == 0:
                start = i
                head = s[max(0, i - 800):i]
                head = re.sub(r'"(?:[^"\\]|\\.)*"', '""', head)  # no strings
                head = re.sub(r"(?m)^\s*#.*$", "", head)  # no preprocessor lines
                m = re.search(r"\b([A-Za-z_]\w*)\s*\(([^(){};]|\([^(){};]*\))*\)\s*$", head)
                name = m.group(1) if m and m.group(1) not in ("if", "while", "for", "switch") else "-"
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                out.append((name, start, i + 1))
        i += 1
    return out


def region_of(regs, pos):
    for name, a, b in regs:
        if a <= pos < b:
            return name
    return "-"


def call_args(s, i):
    """i just after '(' of a call: list of top-level argument texts, end index."""
    args, depth, cur_start, j = [], 1, i, i
    while j < len(s) and depth:
        c = s[j]
        if c in "\"'":
            j = skip_string(s, j)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                args.append(s[cur_start:j])
                break
        elif c == "," and depth == 1:
            args.append(s[cur_start:j])
            cur_start = j + 1
        j += 1
    return args, j


LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"')
# adjacent literals, possibly with upper-case macros between them: one C string
RUN = re.compile(r'"(?:[^"\\]|\\.)*"(?:\s*(?:[A-Z_][A-Z0-9_]*\s*)?"(?:[^"\\]|\\.)*")*')


def literal_text(arg):
    """The text of an argument made of string literals (and macros between
    them), or None when it is not one. PRI* macros count as a conversion."""
    a = arg.strip()
    if not a.startswith('"') and not re.match(r"^[A-Z_][A-Z0-9_]*\s*\"", a):
        return None
    parts, pos = [], 0
    for m in LITERAL.finditer(a):
        between = a[pos:m.start()].strip()
        if between:
            if not re.fullmatch(r"[A-Za-z_]\w*(\s+[A-Za-z_]\w*)*", between):
                return None
            parts.append("%d" if between.startswith("PRI") else " " + between + " ")
        parts.append(m.group(1))
        pos = m.end()
    rest = a[pos:].strip()
    if rest:
        if not re.fullmatch(r"[A-Za-z_]\w*", rest):
            return None
        parts.append("%d" if rest.startswith("PRI") else " " + rest + " ")
    return "".join(parts)


def is_constant(arg):
    a = arg.strip()
    return a.startswith('"') or bool(re.fullmatch(r"[A-Z_][A-Z0-9_]*", a)) or \
        bool(re.fullmatch(r"sizeof\b.*|\d+", a))


def scan_file(path, rel):
    src = strip_comments(open(path, encoding="utf-8", errors="replace").read())
    regs = regions(src)
    sites = []  # (rel, function, kind, line, snippet)

    def line_of(pos):
        return src.count("\n", 0, pos) + 1

    concat_sql, concat_value = {}, {}
    for m in re.finditer(r"\b([A-Za-z_]\w*)\s*\(", src):
        fn = m.group(1)
        if fn not in FORMATTERS and fn not in CONCATS:
            continue
        args, _ = call_args(src, m.end())
        func = region_of(regs, m.start())
        if fn in FORMATTERS:
            for a in args:
                t = literal_text(a)
                if t is None:
                    continue
                if looks_like_sql(t) and CONVERSION.search(t):
                    sites.append((rel, func, "format", line_of(m.start()), t))
                break  # the first literal argument is the format
        else:
            data = args[1:2] if args else []
            for a in data:
                t = literal_text(a)
                if t is not None and looks_like_sql(t):
                    concat_sql.setdefault(func, line_of(m.start()))
                elif t is None and not is_constant(a):
                    concat_value.setdefault(func, (line_of(m.start()), a.strip()))
    for func, line in concat_sql.items():
        if func in concat_value:
            vline, what = concat_value[func]
            sites.append((rel, func, "concat", vline, "appends %s to SQL text" % what))
    # a template: one C string (adjacent literals, macros between them)
    # that reads as SQL and has a {NAME} to be filled in later
    for m in RUN.finditer(src):
        t = "".join(x.group(1) for x in LITERAL.finditer(m.group(0)))
        if PLACEHOLDER.search(t) and looks_like_sql(t):
            sites.append((rel, region_of(regs, m.start()), "template", line_of(m.start()),
                          PLACEHOLDER.search(t).group(0) + " in " + t.strip()[:120]))
    return sites


def load_allowlist(path):
    entries = {}
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        f = line.split(None, 4)
        if len(f) < 5 or f[2] not in ("format", "concat", "template") or not f[3].isdigit():
            sys.exit("%s:%d: want 'path function kind count reason'" % (path, n))
        entries[(f[0], f[1], f[2])] = (int(f[3]), f[4], n)
    return entries


def main(argv):
    allow, paths, root = None, [], None
    it = iter(argv)
    for a in it:
        if a == "--allowlist":
            allow = next(it)
        elif a == "--root":
            root = next(it)
        else:
            paths.append(a)
    if not paths:
        print(__doc__)
        return 2
    root = root or os.getcwd()
    files = []
    for p in paths:
        if os.path.isfile(p):
            files.append(p)
        for dp, dn, fn in os.walk(p):
            dn.sort()
            files += [os.path.join(dp, f) for f in sorted(fn) if f.endswith((".c", ".h"))]
    sites = []
    for f in files:
        sites += scan_file(f, os.path.relpath(os.path.abspath(f), os.path.abspath(root)))
    entries = load_allowlist(allow) if allow else {}
    groups = {}
    for s in sites:
        groups.setdefault(s[:3], []).append(s)
    bad = 0
    for key, ss in sorted(groups.items()):
        want = entries.get(key, (0, None, 0))[0]
        if len(ss) > want:
            bad += 1
            print("FAIL %s: %d %s site(s) in %s(), allowlist has %d:" %
                  (key[0], len(ss), key[2], key[1], want))
            for s in ss:
                print("  %s:%d: %s" % (s[0], s[3], s[4][:160]))
    for key, (want, reason, n) in sorted(entries.items()):
        have = len(groups.get(key, []))
        if have < want:
            bad += 1
            print("FAIL allowlist line %d (%s %s %s %d): only %d such site(s) now; "
                  "correct the count or remove the line" % (n, key[0], key[1], key[2], want, have))
    scanned = len(files)
    if bad:
        print("sql_param_scan: %d problem(s) in %d files. Pass values as parameters ($1 with "
              "PQexecParams/PQprepare); an identifier that must be spliced in needs validation "
              "and an allowlist line with the reason." % (bad, scanned))
        return 1
    print("sql_param_scan: %d files, %d string-built SQL site(s), all allowlisted" %
          (scanned, len(sites)))
    for s in sites:
        print("  allowed %s:%d %s() %s" % (s[0], s[3], s[1], s[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
