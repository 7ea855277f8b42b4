"""Offline checks of a Terraform configuration that need no provider (terraform/README.md).

What `terraform validate` would say without the provider's schema, as far as the
configuration itself decides it:
- every .tf file parses (python-hcl2), with the file, line and column of a syntax error;
- every var./local./module. reference names something declared in its module, and
  module.M.O an output O that the (local) module M declares;
- every reference to a managed resource (TYPE.NAME) names a resource of that module;
- a module call passes only variables the module declares, and every variable without a
  default;
- a templatefile() names a file that exists and passes every variable the template uses;
- with --tfvars FILE (JSON): every key is a root variable and every region's and node's
  attributes are the ones the `regions` variable declares.

Usage: python tfcheck.py DIR [--tfvars FILE]; exit 1 with one line per problem.
"""

import json
import pathlib
import re
import sys

import hcl2

META = {"source", "version", "for_each", "count", "depends_on", "providers"}
IDENT = r"[A-Za-z_][\w-]*"


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"(?m)(#|//).*$", "", text)


def key(name):
    return name.strip('"')


class Module:
    def __init__(self, path, problems):
        self.path = path
        self.variables = {}  # name -> has default
        self.locals = set()
        self.outputs = set()
        self.modules = {}  # name -> (source, args)
        self.resources = set()  # "TYPE.NAME"
        self.texts = {}
        for f in sorted(path.glob("*.tf")):
            text = f.read_text()
            self.texts[f] = text
            try:
                doc = hcl2.loads(text)
            except Exception as e:  # lark's errors carry the line and column
                problems.append(f"{f}: does not parse: {str(e).splitlines()[0]}")
                continue
            for block in doc.get("variable", []):
                for name, body in block.items():
                    self.variables[key(name)] = "default" in body
            for block in doc.get("output", []):
                self.outputs |= {key(n) for n in block}
            for block in doc.get("locals", []):
                self.locals |= {k for k in block if not k.startswith("__")}
            for block in doc.get("module", []):
                for name, body in block.items():
                    args = {k for k in body if k not in META and not k.startswith("__")}
                    self.modules[key(name)] = (key(str(body.get("source", ""))), args)
            for block in doc.get("resource", []):
                for rtype, named in block.items():
                    for name in named:
                        self.resources.add(f"{key(rtype)}.{key(name)}")


def check_module(path, problems, seen):
    path = path.resolve()
    if path in seen:
        return None
    seen.add(path)
    m = Module(path, problems)
    children = {}
    for name, (source, args) in m.modules.items():
        if not source.startswith(("./", "../")):
            continue
        child_path = (path / source).resolve()
        if not child_path.is_dir():
            problems.append(f"{path}: module {name}: source {source} is not a directory")
            continue
        child = check_module(child_path, problems, seen) or Module(child_path, [])
        children[name] = child
        for a in sorted(args - set(child.variables)):
            problems.append(f"{path}: module {name}: {source} declares no variable {a!r}")
        for v in sorted(set(child.variables) - args):
            if not child.variables[v]:
                problems.append(f"{path}: module {name}: required variable {v!r} is not set")
    for f, raw in m.texts.items():
        text = strip_comments(raw)
        for ln, line in enumerate(text.splitlines(), 1):
            where = f"{f}:{ln}"
            for v in re.findall(rf"\bvar\.({IDENT})", line):
                if v not in m.variables:
                    problems.append(f"{where}: undeclared variable var.{v}")
            for v in re.findall(rf"\blocal\.({IDENT})", line):
                if v not in m.locals:
                    problems.append(f"{where}: undeclared local.{v}")
            for mod, out in re.findall(rf"\bmodule\.({IDENT})(?:\[[^\]]*\])?(?:\.({IDENT}))?", line):
                if mod not in m.modules:
                    problems.append(f"{where}: undeclared module.{mod}")
                elif out and mod in children and out not in children[mod].outputs:
                    problems.append(f"{where}: module.{mod} has no output {out!r}")
            # `for k, r in module.M : ... r.O` (a module called with for_each): O must be an output.
            for var, mod in re.findall(rf"\bfor\s+(?:{IDENT}\s*,\s*)?({IDENT})\s+in\s+module\.({IDENT})\b", line):
                if mod in children:
                    for out in re.findall(rf"(?<![\w.]){re.escape(var)}\.({IDENT})", line):
                        if out not in children[mod].outputs:
                            problems.append(f"{where}: module.{mod} has no output {out!r}")
            for rtype, name in re.findall(rf"(?<![\w.\"])((?:google|aws|azurerm)_[a-z0-9_]+)\.({IDENT})", line):
                if f"{rtype}.{name}" not in m.resources:
                    problems.append(f"{where}: no resource {rtype}.{name} in this module")
        for tmpl, body in templatefile_calls(text):
            tpath = path / tmpl
            if not tpath.is_file():
                problems.append(f"{f}: templatefile: {tmpl} does not exist")
                continue
            passed = set(re.findall(rf"(?m)^\s*({IDENT})\s*=", body))
            for used in sorted(template_variables(tpath.read_text()) - passed):
                problems.append(f"{f}: templatefile {tmpl} uses {used!r}, which is not passed")
    return m


def templatefile_calls(text):
    """(relative path, the variables map's text) of each templatefile("${path.module}/X", {..})."""
    for match in re.finditer(r'templatefile\(\s*"\$\{path\.module\}/([^"]+)"\s*,\s*\{', text):
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        yield match.group(1), text[match.end() : i - 1]


TEMPLATE_FUNCS = {"jsonencode", "yamlencode", "lookup", "join", "length", "upper", "lower", "for", "in", "if", "endif", "else", "endfor", "null", "true", "false"}


def template_variables(text):
    names = set()
    for expr in re.findall(r"[$%]\{~?\s*([^}]*)\}", text):
        expr = re.sub(r'"[^"]*"', "", expr)
        for ident in re.findall(rf"(?<![\w.])({IDENT})", expr):
            if ident not in TEMPLATE_FUNCS:
                names.add(ident)
    return names


def check_tfvars(root, tfvars, problems):
    values = json.loads(pathlib.Path(tfvars).read_text())
    for k in sorted(set(values) - set(root.variables)):
        problems.append(f"{tfvars}: {k!r} is not a variable of {root.path}")
    text = strip_comments("\n".join(root.texts.values()))
    m = re.search(r'variable\s+"regions"\s*\{', text)
    if not m or "regions" not in values:
        return
    decl = text[m.end() :]
    region_attrs = set(re.findall(r"(?m)^\s{4}(\w+)\s*=", decl[: decl.find("nodes = map(") + 20]))
    node_block = decl[decl.find("nodes = map(") :]
    node_block = node_block[: node_block.find("}))")]
    node_attrs = set(re.findall(r"(?m)^\s*(\w+)\s*=", node_block)) - {"nodes"}
    optional = set(re.findall(r"(?m)^\s*(\w+)\s*=\s*optional\(", decl[: decl.find("}))") + 3]))
    for rname, region in values["regions"].items():
        for k in sorted(set(region) - region_attrs):
            problems.append(f"{tfvars}: region {rname}: {k!r} is not an attribute of var.regions")
        for k in sorted(region_attrs - set(region) - optional):
            problems.append(f"{tfvars}: region {rname}: {k!r} is missing")
        for nid, node in region.get("nodes", {}).items():
            for k in sorted(set(node) - node_attrs):
                problems.append(f"{tfvars}: node {nid}: {k!r} is not an attribute of var.regions' nodes")
            for k in sorted(node_attrs - set(node) - optional):
                problems.append(f"{tfvars}: node {nid}: {k!r} is missing")


def main(argv):
    if not argv or argv[0].startswith("-"):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    problems = []
    root = check_module(pathlib.Path(argv[0]), problems, set())
    if "--tfvars" in argv and root is not None:
        check_tfvars(root, argv[argv.index("--tfvars") + 1], problems)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
