"""A lineage DAG as server-side SVG: a layered layout (roots left, the version right), merge order shown."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from fsmount.ui.model import Node

NODE_W, NODE_H = 210, 46
GAP_X, GAP_Y = 70, 22
PAD = 12


@dataclass(slots=True)
class Placed:
    node: Node
    col: int
    row: int

    @property
    def x(self) -> int:
        return PAD + self.col * (NODE_W + GAP_X)

    @property
    def y(self) -> int:
        return PAD + self.row * (NODE_H + GAP_Y)


def depths(nodes: dict[str, Node], target: str) -> dict[str, int]:
    """Longest distance from `target` to each ancestor (Kahn's order over child -> parent edges)."""
    children_left = {v: 0 for v in nodes}
    for n in nodes.values():
        for p in n.parents:
            children_left[p] += 1
    depth = {v: 0 for v in nodes}
    ready = [v for v, k in children_left.items() if k == 0]
    while ready:
        v = ready.pop()
        for p in nodes[v].parents:
            depth[p] = max(depth[p], depth[v] + 1)
            children_left[p] -= 1
            if children_left[p] == 0:
                ready.append(p)
    return depth


def layout(nodes: dict[str, Node], target: str) -> dict[str, Placed]:
    """Columns by depth; within a column, nodes ordered by where their children sit, then merge order."""
    depth = depths(nodes, target)
    top = max(depth.values(), default=0)
    levels: dict[int, list[str]] = {}
    for v, d in depth.items():
        levels.setdefault(d, []).append(v)
    pos: dict[str, float] = {}
    kids: dict[str, list[tuple[str, int]]] = {v: [] for v in nodes}
    for n in nodes.values():
        for i, p in enumerate(n.parents):
            kids[p].append((n.id, i))
    for d in sorted(levels):
        def key(v: str) -> tuple[float, str]:
            ks = [pos[c] + i / (len(nodes[c].parents) + 1) for c, i in kids[v] if c in pos]
            return (sum(ks) / len(ks) if ks else 0.0, v)
        for row, v in enumerate(sorted(levels[d], key=key)):
            pos[v] = row
    return {v: Placed(nodes[v], top - depth[v], int(pos[v])) for v in nodes}


def render(nodes: dict[str, Node], target: str, href: Callable[[str], str], cut: bool = False) -> str:
    """The SVG element: each node a link to its version, each edge parent -> child, numbered on merges."""
    placed = layout(nodes, target)
    cols = max((p.col for p in placed.values()), default=0) + 1
    rows = max((p.row for p in placed.values()), default=0) + 1
    width = 2 * PAD + cols * NODE_W + (cols - 1) * GAP_X
    height = 2 * PAD + rows * NODE_H + (rows - 1) * GAP_Y + (18 if cut else 0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="lineage graph">']
    for child in placed.values():
        merge = len(child.node.parents) > 1
        for i, pid in enumerate(child.node.parents):
            par = placed[pid]
            k = len(child.node.parents)
            x1, y1 = par.x + NODE_W, par.y + NODE_H // 2
            x2, y2 = child.x, child.y + NODE_H * (i + 1) // (k + 1)  # ends spread in merge order
            mid = (x1 + x2) // 2
            out.append(f'<path class="edge" data-from="{pid}" data-to="{child.node.id}" data-order="{i + 1}" '
                       f'd="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2 - 6},{y2}" marker-end="url(#arrow)"/>')
            if merge:
                cx = x2 - 20
                out.append(f'<g class="order"><title>parent {i + 1} of {k} (later parents win)</title>'
                           f'<circle cx="{cx}" cy="{y2}" r="7"/>'
                           f'<text x="{cx}" y="{y2 + 4}">{i + 1}</text></g>')
    for p in placed.values():
        n = p.node
        cls = "node current" if n.id == target else "node" if n.readable else "node unreadable"
        label = n.label if len(n.label) <= 28 else n.label[:27] + "…"
        out.append(
            f'<a href={quoteattr(href(n.id))} class="{cls}" data-id="{n.id}">'
            f'<title>{escape(n.label)} {n.id}</title>'
            f'<rect x="{p.x}" y="{p.y}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f'<text x="{p.x + 10}" y="{p.y + 19}" class="label">{escape(label)}</text>'
            f'<text x="{p.x + 10}" y="{p.y + 36}" class="id">{n.id[:12]}</text></a>')
    if cut:
        out.append(f'<text x="{PAD}" y="{height - 6}" class="cut">older ancestors not drawn</text>')
    out.insert(1, '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
                  'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>')
    out.append("</svg>")
    return "".join(out)
