"""DiaBloConfig validation and its dict round trip."""

from __future__ import annotations

import pytest

from diablo_core.methods.diablo.config import DEFAULT_TARGET_MODULES, DiaBloConfig


def test_defaults_match_the_paper() -> None:
    config = DiaBloConfig()
    assert config.num_blocks == 64 and config.dropout == 0.05 and config.layers is None
    assert (
        config.target_modules
        == DEFAULT_TARGET_MODULES
        == ("q_proj", "k_proj", "v_proj", "up_proj", "down_proj")
    )


def test_lists_become_tuples_and_round_trip() -> None:
    config = DiaBloConfig(num_blocks=32, target_modules=["q_proj", "o_proj"], dropout=0, layers=[3, 1])
    assert config.target_modules == ("q_proj", "o_proj") and config.layers == (1, 3)
    assert isinstance(config.dropout, float)
    assert config.to_dict() == {
        "num_blocks": 32,
        "target_modules": ["q_proj", "o_proj"],
        "dropout": 0.0,
        "layers": [1, 3],
    }
    assert DiaBloConfig.from_dict(config.to_dict()) == config
    assert hash(config) == hash(DiaBloConfig.from_dict(config.to_dict()))


@pytest.mark.parametrize(
    ("kwargs", "field", "value"),
    [
        ({"num_blocks": 0}, "num_blocks", "0"),
        ({"num_blocks": 2.5}, "num_blocks", "2.5"),
        ({"num_blocks": True}, "num_blocks", "True"),
        ({"dropout": 1.0}, "dropout", "1.0"),
        ({"dropout": -0.1}, "dropout", "-0.1"),
        ({"dropout": "0.1"}, "dropout", "'0.1'"),
        ({"target_modules": "q_proj"}, "target_modules", "'q_proj'"),
        ({"target_modules": []}, "target_modules", "[]"),
        ({"target_modules": ["self_attn.q_proj"]}, "target_modules", "'self_attn.q_proj'"),
        ({"target_modules": ["q_proj", "q_proj"]}, "target_modules", "'q_proj'"),
        ({"layers": []}, "layers", "[]"),
        ({"layers": [-1]}, "layers", "-1"),
        ({"layers": [1, 1]}, "layers", "1"),
    ],
)
def test_invalid_values_name_field_and_value(kwargs: dict, field: str, value: str) -> None:
    with pytest.raises(ValueError) as raised:
        DiaBloConfig(**kwargs)
    assert field in str(raised.value) and value in str(raised.value)


def test_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="rank"):
        DiaBloConfig.from_dict({"num_blocks": 8, "rank": 4})
