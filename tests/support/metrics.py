"""Reading a Prometheus /metrics page: every sample by name and labels, and the families present."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


class Samples(dict):
    """(name, sorted labels) -> value. `samples("name", label="v")` reads one sample, 0.0 when absent;
    `samples["families"]` is the set of family names on the page."""

    def __call__(self, name: str, **labels) -> float:
        return self.get((name, tuple(sorted(labels.items()))), 0.0)


def parse(text: str) -> Samples:
    samples = Samples()
    families = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    samples["families"] = families
    return samples
