"""No join inside a template (issue 13): a filtered loop (`{% for x in xs if ... %}`) nested in
another loop scans `xs` once per outer row. Over the trial's sites (1,500 at the scale world)
the supply page's three such loops took 13 s a view; views pass lookups (dicts by id) instead.

A nested filtered loop is allowed only over a collection bounded by the protocol or by one
subject, named here with the reason."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, nodes

TEMPLATES = Path(__file__).resolve().parents[2] / "iwrs" / "web" / "templates"
BOUNDED = {
    # (template, iterable as written): why its size does not grow with the trial
    ("dispensing.html", "row.visits"): "the protocol's visits",
    ("randomization.html", "dispensations"): "one subject's dispensations",
}


def _source(node: nodes.Node) -> str:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        return f"{_source(node.node)}.{node.attr}"
    return type(node).__name__


def nested_filtered_loops(tree: nodes.Node, inside: bool = False) -> list[tuple[int, str]]:
    """(line, iterable) of every filtered for-loop inside another for-loop."""
    found = []
    for child in tree.iter_child_nodes():
        if isinstance(child, nodes.For):
            if inside and child.test is not None:
                found.append((child.lineno, _source(child.iter)))
            found += nested_filtered_loops(child, True)
        else:
            found += nested_filtered_loops(child, inside)
    return found


def test_no_template_joins_a_trial_sized_collection_in_a_loop():
    env = Environment(autoescape=True)
    offending = []
    for path in sorted(TEMPLATES.rglob("*.html")):
        tree = env.parse(path.read_text(encoding="utf-8"))
        for line, iterable in nested_filtered_loops(tree):
            if (path.name, iterable) not in BOUNDED:
                offending.append(f"{path.name}:{line} loops over {iterable}")
    assert offending == []


def test_the_check_sees_a_join_in_a_loop():
    tree = Environment(autoescape=True).parse(
        "{% for s in shipments %}{% for site in sites if site.id == s.site_id %}"
        "{{ site.code }}{% endfor %}{% endfor %}"
    )
    assert nested_filtered_loops(tree) == [(1, "sites")]
