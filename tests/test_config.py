import json

import pytest

from rnncli.core.config import TrainConfig, default
from rnncli.core.errors import UsageError


def test_defaults_are_valid_and_data_settings_derived_later():
    config = TrainConfig()
    assert config.cell == "gru" and config.max_tokens is None and config.seq_len is None
    resolved = config.replace(max_tokens=100, seq_len=50)
    assert (resolved.max_tokens, resolved.seq_len, resolved.cell) == (100, 50, "gru")
    assert config.seq_len is None  # a new object: the original is left as it was
    with pytest.raises(UsageError, match="seq_len"):
        config.replace(seq_len=1)  # a replaced value is validated too


def test_json_round_trip():
    config = TrainConfig(cell="lstm", units=8, layers=2, max_tokens=500, seq_len=40)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_frozen_and_keyword_only():
    with pytest.raises(TypeError):
        TrainConfig("gru")  # noqa
    with pytest.raises(AttributeError):
        TrainConfig().units = 3


@pytest.mark.parametrize("changes, words", [
    ({"cell": "rnn"}, "cell"),
    ({"units": 0}, "units"),
    ({"units": 1.5}, "units"),
    ({"dropout": 1.0}, "dropout"),
    ({"lr": 0}, "lr"),
    ({"val_split": 0.5}, "val_split"),
    ({"val_split": 0.45, "test_split": 0.45}, "leave"),
    ({"max_tokens": 2}, "max_tokens"),
    ({"seq_len": True}, "seq_len"),
    ({"patience": -1}, "patience"),
    ({"lr_decay": 0}, "lr_decay"),
    ({"pooling": "sum"}, "pooling"),
    ({"clipnorm": float("nan")}, "clipnorm"),
    ({"tokenizer": "bpe"}, "tokenizer"),
    ({"bigram_dim": -1}, "bigram_dim"),
    ({"bigram_dim": True}, "bigram_dim"),
])
def test_invalid_settings_name_the_problem(changes, words):
    with pytest.raises(UsageError, match=words):
        TrainConfig(**changes)


def test_unknown_keys_are_refused():
    with pytest.raises(UsageError, match="unknown settings: colour"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "colour": "red"})


def test_train_options_default_to_the_settings_objects_defaults():
    """Defaults live only in TrainConfig: each `rnncli train` option of a setting starts
    at the value a TrainConfig() holds (None: derived from the data)."""
    from rnncli.cli.train import train

    config = TrainConfig()
    options = {p.name: p.default for p in train.params}
    settings = [name for name in config.to_dict() if name in options]
    assert len(settings) >= 20, settings  # every tunable setting is an option
    assert {name: options[name] for name in settings} == {name: getattr(config, name)
                                                          for name in settings}
    assert default("units") == 64 and default("max_tokens") is None


def test_manifests_from_before_the_ngram_model_read_as_without_it():
    settings = TrainConfig().to_dict()
    del settings["ngrams"]
    assert TrainConfig.from_dict(settings).ngrams is False
    assert TrainConfig.from_dict({**settings, "ngrams": True}).ngrams is True


def test_manifests_from_before_the_tokenizer_read_as_words_without_token_pairs():
    settings = TrainConfig().to_dict()
    del settings["tokenizer"], settings["bigram_dim"]
    old = TrainConfig.from_dict(settings)
    assert old.tokenizer == "words" and old.bigram_dim == 0
    assert TrainConfig().tokenizer == "cjk-chars" and TrainConfig().bigram_dim is None


def test_the_cli_and_the_settings_object_allow_the_same_values():
    """One rule per setting (config.RANGES): a value the option accepts is a valid
    setting and the other way round, at and around every bound (--layers 9 included)."""
    import click

    from rnncli.cli.train import train
    from rnncli.core.config import RANGES

    options = {p.name: p for p in train.params}
    for name, allowed in RANGES.items():
        bounds = [b for b in (allowed.low, allowed.high) if b is not None]
        probes = {v for b in bounds for v in (b - 1, b - 0.25, b, b + 0.25, b + 1)}
        for value in sorted(probes):
            value = int(value) if allowed.whole and float(value).is_integer() else value
            if allowed.whole and not isinstance(value, int):
                continue
            try:
                options[name].type.convert(value, options[name], None)
                cli_ok = True
            except click.BadParameter:
                cli_ok = False
            try:
                TrainConfig(**{name: value})
                config_ok = True
            except UsageError:
                config_ok = False
            if name in ("val_split", "test_split") and cli_ok and not config_ok:
                continue  # together they must leave 20% to train on: a rule of the pair
            assert cli_ok == config_ok, (name, value, cli_ok, config_ok)
    assert not RANGES["layers"].holds(9)
