from __future__ import annotations

import re

from registry.ids import JOB_PREFIX, id_part, new_id


def test_ids_are_unique_and_sort_by_creation() -> None:
    ids = [new_id(JOB_PREFIX) for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids
    assert all(re.fullmatch(r"ftjob-[0-9a-f]{24}", value) for value in ids)


def test_id_part_strips_the_prefix() -> None:
    assert id_part("ftjob-0661591b40a65eb321c7cde4") == "0661591b40a65eb321c7cde4"
