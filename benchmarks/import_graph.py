"""Count the arrows between funcgrad's layers (direct imports): a structural figure for docs/design.md.

    python benchmarks/import_graph.py .          # from the repository root

A layer is a folder of funcgrad (core, engines, tasks, training, cli, testing), the
strategies folder, or the facade (``funcgrad/__init__.py``). Prints one line per arrow
with the number of import statements behind it, then the totals. An arrow from a lower
layer to a higher one would be a layering bug (tests/test_layout.py fails on it).
"""
import ast, pathlib, sys, collections
root = pathlib.Path(sys.argv[1])
def layer(mod):
    if mod.startswith("funcgrad.strategies"): return "strategies"
    parts = mod.split(".")
    if mod == "funcgrad": return "facade"
    if len(parts) > 1 and parts[0] == "funcgrad": return parts[1] if parts[1] in ("core","engines","tasks","training","cli","testing") else None
    return None
def modname(p):
    rel = p.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "strategies": parts = ["funcgrad", "strategies"] + parts[1:]
    if parts[-1] == "__init__": parts = parts[:-1]
    return ".".join(parts)
arrows = collections.Counter()
for p in list((root/"funcgrad").rglob("*.py")) + list((root/"strategies").rglob("*.py")):
    src = layer(modname(p)) or ("facade" if modname(p)=="funcgrad" else None)
    if src is None: continue
    for n in ast.walk(ast.parse(p.read_text())):
        if isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            dst = layer(n.module)
        elif isinstance(n, ast.Import):
            dst = None
            for a in n.names:
                if layer(a.name): dst = layer(a.name)
        else: continue
        if dst and dst != src: arrows[(src, dst)] += 1
for (a,b),n in sorted(arrows.items()): print(f"{a} -> {b}: {n}")
print(len(arrows), "arrows between", len({x for k in arrows for x in k}), "rooms")
