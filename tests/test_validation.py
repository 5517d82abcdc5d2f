"""Every numeric option is range-checked however it arrives (issue 13, reproduction 6).

NaN, ±inf, negative values and zero where it means nothing are one ConfigError naming the
option and its allowed range, from a URL, a TOML file or a keyword argument: never a raw
ValueError from anyio or ``random`` later, never a busy loop, never an ExceptionGroup at
close. A config file that is not UTF-8 is a ConfigError too, and one line from the CLIs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from notifykit import CircuitPolicy, ConfigError, Notifier, NotifierConfig, RetryPolicy, TransportConfig
from notifykit.backup.cli import main as backup_main
from notifykit.cli import main as notifykit_main

BAD_FLOATS = ["nan", "inf", "-inf", "-1"]

#: (URL key, TOML table and key, allowed-range text, extra bad values)
TRANSPORT_OPTIONS = [
    ("queue_size", ("", "queue_size"), "an integer >= 1", ["0", "1.5"]),
    ("batch_size", ("", "batch_size"), "an integer >= 1", ["0"]),
    ("block_timeout", ("", "block_timeout"), "a finite number >= 0", []),
    ("spool_max_messages", ("", "spool_max_messages"), "an integer >= 1", ["0"]),
    ("retry_initial_delay", ("retry", "initial_delay"), "a finite number >= 0", []),
    ("retry_max_delay", ("retry", "max_delay"), "a finite number >= 0", []),
    ("retry_multiplier", ("retry", "multiplier"), "a finite number >= 1", ["0", "0.5"]),
    ("retry_max_elapsed", ("retry", "max_elapsed"), "a finite number >= 0", []),
    ("retry_max_attempts", ("retry", "max_attempts"), "an integer >= 1", ["0"]),
    ("circuit_failure_threshold", ("circuit", "failure_threshold"), "an integer >= 1", ["0"]),
    ("circuit_reset_timeout", ("circuit", "reset_timeout"), "a finite number >= 0", []),
]
NOTIFIER_OPTIONS = [
    ("close_timeout", "a finite number >= 0", []),
    ("status_interval", "a finite number > 0", ["0"]),
    ("max_payload_bytes", "an integer >= 1", ["0"]),
]


def option_name(url_key: str) -> str:
    for prefix in ("retry", "circuit"):
        if url_key.startswith(prefix + "_"):
            return f"{prefix}.{url_key[len(prefix) + 1:]}"
    return url_key


def transport_cases() -> list[tuple[str, str, str]]:
    return [(key, value, allowed) for key, _, allowed, extra in TRANSPORT_OPTIONS for value in BAD_FLOATS + extra]


def notifier_cases() -> list[tuple[str, str, str]]:
    return [(key, value, allowed) for key, allowed, extra in NOTIFIER_OPTIONS for value in BAD_FLOATS + extra]


def expected(name: str, allowed: str) -> str:
    return rf"{re.escape(name)} must be {re.escape(allowed)}, got "


@pytest.mark.parametrize(("key", "value", "allowed"), transport_cases())
def test_bad_number_in_url(key: str, value: str, allowed: str) -> None:
    with pytest.raises(ConfigError, match=r"memory://\?.*: " + expected(option_name(key), allowed)):
        TransportConfig.from_url(f"memory://?{key}={value}")


@pytest.mark.parametrize(("key", "value", "allowed"), transport_cases())
def test_bad_number_in_toml(tmp_path: Path, key: str, value: str, allowed: str) -> None:
    table, name = next(t for k, t, _, _ in TRANSPORT_OPTIONS if k == key)
    path = tmp_path / "n.toml"  # TOML itself has nan, inf and -inf
    path.write_text('[transports.a]\nurl = "memory://"\n' + (f"[transports.a.{table}]\n" if table else "")
                    + f"{name} = {value}\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + r" \[transports\.a\]: "
                       + expected(option_name(key), allowed)):
        Notifier.from_config(path)


@pytest.mark.parametrize(("key", "value", "allowed"), notifier_cases())
def test_bad_notifier_number_in_toml_and_keywords(tmp_path: Path, key: str, value: str, allowed: str) -> None:
    path = tmp_path / "n.toml"
    path.write_text(f'{key} = {value}\n[transports.a]\nurl = "memory://"\n')
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ": " + expected(key, allowed)):
        Notifier.from_config(path)
    number: Any = int(value) if key == "max_payload_bytes" and value not in ("nan", "inf", "-inf") else float(value)
    with pytest.raises(ConfigError, match=expected(key, allowed)):
        Notifier.from_url("memory://", publisher_id="t", **{key: number})
    with pytest.raises(ConfigError, match=expected(key, allowed)):
        NotifierConfig(transports=(TransportConfig("memory://"),), **{key: number})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_bad_numbers_as_keywords(value: float) -> None:
    with pytest.raises(ConfigError, match=expected("block_timeout", "a finite number >= 0")):
        Notifier.from_url("memory://", publisher_id="t", block_timeout=value)
    with pytest.raises(ConfigError, match=expected("retry.max_delay", "a finite number >= 0")):
        RetryPolicy(max_delay=value)
    with pytest.raises(ConfigError, match=expected("retry.max_elapsed", "a finite number >= 0")):
        RetryPolicy(max_elapsed=value)
    with pytest.raises(ConfigError, match=expected("circuit.reset_timeout", "a finite number >= 0")):
        CircuitPolicy(reset_timeout=value)
    with pytest.raises(ConfigError, match=expected("queue_size", "an integer >= 1")):
        TransportConfig("memory://", queue_size=value)  # type: ignore[arg-type]


def test_booleans_are_not_numbers() -> None:
    with pytest.raises(ConfigError, match=expected("queue_size", "an integer >= 1")):
        NotifierConfig.from_mapping({"transports": {"a": {"url": "memory://", "queue_size": True}}})


@pytest.mark.asyncio
async def test_bad_aclose_timeout_is_a_config_error_and_the_notifier_still_closes(dead_letter_path: Path) -> None:
    n = Notifier.from_url("memory://", publisher_id="t", dead_letters=dead_letter_path)
    await n.start()
    await n.info({}, "e.v", {})
    with pytest.raises(ConfigError, match=expected("aclose timeout", "a finite number >= 0")):
        await n.aclose(float("nan"))
    assert (await n.aclose())["memory"].sent == 1


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_transport_float_options_must_be_finite(value: str) -> None:
    with pytest.raises(ConfigError, match=rf"option 'delay' of transport .* must be a finite number, got '{value}'"):
        Notifier.from_url(f"memory://?delay={value}", publisher_id="t")


def test_good_values_still_pass() -> None:
    config = TransportConfig.from_url("memory://?queue_size=1&block_timeout=0&retry_max_delay=0&retry_max_elapsed=0"
                                      "&retry_multiplier=1&circuit_reset_timeout=0&batch_size=1&retry_max_elapsed=none")
    assert (config.queue_size, config.block_timeout, config.retry.max_elapsed) == (1, 0.0, None)
    notifier = NotifierConfig.from_mapping({"close_timeout": 0, "status_interval": 0.5, "max_payload_bytes": 1.0,
                                            "transports": {"a": {"url": "memory://", "queue_size": 2.0}}})
    assert (notifier.close_timeout, notifier.status_interval, notifier.transports[0].queue_size) == (0, 0.5, 2)


# -- a config file that is not UTF-8 --------------------------------------------------------


@pytest.fixture
def latin1_toml(tmp_path: Path) -> Path:
    path = tmp_path / "latin1.toml"
    path.write_bytes('publisher_id = "caf\u00e9"\n[transports.a]\nurl = "memory://"\n'.encode("latin-1"))
    return path


def test_non_utf8_toml_is_a_config_error(latin1_toml: Path) -> None:
    with pytest.raises(ConfigError, match=r"latin1\.toml' is not UTF-8 text \(byte 0xe9 at offset 19\)"):
        Notifier.from_config(latin1_toml)


def test_non_utf8_toml_is_one_line_from_notifykit_cli(latin1_toml: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = notifykit_main(["deadletters", "replay", "--file", str(tmp_path / "dl.jsonl"), "--config", str(latin1_toml)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("notifykit: error: configuration file") and "not UTF-8" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("option", ["--config", "--notifier-config"])
def test_non_utf8_toml_is_one_line_from_backup_cli(latin1_toml: Path, tmp_path: Path, option: str,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for key in ("CONFIG", "NOTIFIER_URL"):
        monkeypatch.delenv(f"NOTIFYKIT_BACKUP_{key}", raising=False)
    monkeypatch.setenv("NOTIFYKIT_BACKUP_CATALOG_PATH", str(tmp_path / "catalog.sqlite3"))
    monkeypatch.setenv("NOTIFYKIT_BACKUP_STORE_PATH", str(tmp_path / "objects"))
    monkeypatch.setenv("NOTIFYKIT_BACKUP_DEAD_LETTER_PATH", str(tmp_path / "dl.jsonl"))
    code = backup_main(["list", option, str(latin1_toml)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("notifykit-backup: error:") and "not UTF-8 text (byte 0xe9" in err
    assert len(err.strip().splitlines()) == 1
