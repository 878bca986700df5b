"""An import-linter contract that no module of a package takes part in an import cycle.

import-linter's own contracts compare groups of modules (layers, forbidden, siblings);
none says "no cycle anywhere". This one finds the strongly connected components of
the module import graph (every import, including those inside functions: a cycle held
apart by a function-local import is still a cycle) and names each cycle's imports.
"""

from __future__ import annotations

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output


class AcyclicModulesContract(Contract):
    """Contract type `acyclic_modules`: `packages` hold no import cycle between modules."""

    type_name = "acyclic_modules"

    packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        prefixes = tuple(str(p) for p in self.packages)  # type: ignore[attr-defined]
        modules = sorted(m for m in graph.modules if m.startswith(prefixes))
        edges = {
            m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in modules)
            for m in modules
        }
        cycles = []
        for component in strongly_connected(edges):
            inside = set(component)
            lines = []
            for importer in component:
                for imported in edges[importer]:
                    if imported in inside:
                        details = graph.get_import_details(importer=importer, imported=imported)
                        where = ", ".join(str(d["line_number"]) for d in details)
                        lines.append(f"{importer} -> {imported} (l. {where})")
            cycles.append(lines)
        return ContractCheck(kept=not cycles, metadata={"cycles": cycles})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for number, lines in enumerate(check.metadata["cycles"], start=1):
            output.print_error(f"Import cycle {number}:", bold=True)
            for line in lines:
                output.indent_cursor()
                output.print_error(line)
            output.new_line()


def strongly_connected(edges: dict[str, list[str]]) -> list[list[str]]:
    """The components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found
