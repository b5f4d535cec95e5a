"""gateway.config: YAML + environment → frozen, validated settings (SPEC section 9)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config import (
    Settings,
    declared_deployments,
    load_settings,
    settings_from_dict,
)
from gateway.durations import parse_duration
from gateway.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.yaml"


def minimal() -> dict[str, Any]:
    return {
        "providers": {"openai": {"kind": "openai", "base_url": "https://api.openai.com/v1"}},
        "deployments": {
            "support-bot": {
                "stable": "v1",
                "canary": "v2",
                "versions": {
                    "v1": {"provider": "openai", "model": "gpt-4o-mini", "system_prompt": "one"},
                    "v2": {"provider": "openai", "model": "gpt-4o-mini", "system_prompt": "two"},
                },
            }
        },
    }


def config_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        settings_from_dict(data)
    message = str(info.value)
    assert "\n" not in message
    return message


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ=environ or {})
    message = str(info.value)
    assert "\n" not in message
    return message


# -- the shipped example ----------------------------------------------------------------------


def test_example_loads_with_an_empty_environment() -> None:
    settings = load_settings(EXAMPLE, environ={})
    assert isinstance(settings, Settings)
    assert settings.database_url == "sqlite+aiosqlite:///./gateway.db"
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8080
    assert settings.server.shutdown_grace == 30.0
    assert settings.recorder.flush_interval == 0.5
    assert settings.database.refresh_interval == 1.0
    assert set(settings.providers) == {"openai", "anthropic", "simulated"}
    assert settings.providers["anthropic"].kind == "anthropic"
    simulation = settings.providers["simulated"].simulation
    assert simulation is not None and simulation.api == "chat_completions"
    assert simulation.models["sim-model"].quality == 0.85
    assert settings.providers["openai"].api_key.get_secret_value() == ""
    assert settings.pricing["gpt-4o-mini"].input == 0.15
    assert settings.pricing["gpt-4o-mini"].output == 0.60
    # ${GATEWAY_ADMIN_TOKEN} is unset: the empty token is left out, the admin API is closed.
    assert settings.admin_tokens == {}
    assert settings.client_tokens == {}
    deployment = settings.deployments["support-bot"]
    assert (deployment.stable, deployment.canary) == ("v1", "v2")
    assert deployment.policy.stages == (5, 25, 50, 100)
    assert deployment.policy.check_interval == 15 * 60
    assert deployment.policy.latency_baseline == 3600 and deployment.policy.deprecated_keys() == []
    assert deployment.policy.min_stage_duration == 24 * 3600
    v2 = deployment.versions["v2"]
    assert v2.params == {"temperature": 0.3}
    assert [shot.role for shot in v2.few_shot] == ["user", "assistant"]


def test_example_takes_secrets_from_the_environment() -> None:
    environ = {"OPENAI_API_KEY": "sk-example", "GATEWAY_ADMIN_TOKEN": "admin-secret"}
    settings = load_settings(EXAMPLE, environ=environ)
    assert settings.providers["openai"].api_key.get_secret_value() == "sk-example"
    assert {name: token.get_secret_value() for name, token in settings.admin_tokens.items()} == {
        "ops": "admin-secret"
    }
    # Secrets do not show in the settings' repr.
    assert "sk-example" not in repr(settings)
    assert "admin-secret" not in repr(settings)


def test_settings_are_frozen() -> None:
    settings = load_settings(EXAMPLE, environ={})
    with pytest.raises(ValidationError):
        settings.database_url = "sqlite+aiosqlite:///other.db"  # type: ignore[misc]


def test_no_path_gives_the_defaults() -> None:
    settings = load_settings(None, environ={})
    assert settings.deployments == {}
    assert settings.server.port == 8080


def test_load_settings_does_not_read_os_environ_when_environ_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "1234")
    monkeypatch.setenv("OPENAI_API_KEY", "from-os")
    settings = load_settings(EXAMPLE, environ={})
    assert settings.server.port == 8080
    assert settings.providers["openai"].api_key.get_secret_value() == ""


# -- interpolation ----------------------------------------------------------------------------------

INTERPOLATED = """
database_url: ${DB:-sqlite+aiosqlite:///default.db}
user_id_salt: pre-${SALT}-post
server: {host: "${HOST}", port: "${PORT:-9001}"}
providers:
  openai: {kind: openai, base_url: "${BASE:-https://api.openai.com/v1}", api_key: "${KEY}"}
"""


def test_interpolation_with_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, INTERPOLATED), environ={"HOST": "0.0.0.0", "KEY": "k1", "SALT": "s"})
    assert settings.database_url == "sqlite+aiosqlite:///default.db"
    assert settings.user_id_salt.get_secret_value() == "pre-s-post"
    assert settings.server.host == "0.0.0.0"
    assert settings.server.port == 9001
    assert settings.providers["openai"].base_url == "https://api.openai.com/v1"
    assert settings.providers["openai"].api_key.get_secret_value() == "k1"


def test_interpolation_prefers_the_variable_over_the_default(tmp_path: Path) -> None:
    environ = {
        "DB": "postgresql+asyncpg://gw@db/gw",
        "PORT": "7000",
        "BASE": "http://127.0.0.1:9999/v1",
        "HOST": "h",
    }
    settings = load_settings(write(tmp_path, INTERPOLATED), environ=environ)
    assert settings.database_url == "postgresql+asyncpg://gw@db/gw"
    assert settings.server.port == 7000
    assert settings.providers["openai"].base_url == "http://127.0.0.1:9999/v1"


def test_unset_variable_is_an_empty_string(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, INTERPOLATED), environ={})
    assert settings.user_id_salt.get_secret_value() == "pre--post"
    assert settings.server.host == ""
    assert settings.providers["openai"].api_key.get_secret_value() == ""


def test_empty_variable_takes_the_default(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, INTERPOLATED), environ={"PORT": ""})
    assert settings.server.port == 9001


def test_interpolated_values_are_not_interpolated_again(tmp_path: Path) -> None:
    text = 'user_id_salt: "${SALT}"\n'
    settings = load_settings(write(tmp_path, text), environ={"SALT": "${OTHER}", "OTHER": "leak"})
    assert settings.user_id_salt.get_secret_value() == "${OTHER}"


def test_interpolation_inside_lists_and_nested_maps(tmp_path: Path) -> None:
    text = "alerts: {webhooks: ['${HOOK}', 'https://fixed.example/x']}\nserver: {cors_origins: ['${ORIGIN:-https://a.example}']}\n"
    settings = load_settings(write(tmp_path, text), environ={"HOOK": "https://hooks.example/1"})
    assert settings.alerts.webhooks == ("https://hooks.example/1", "https://fixed.example/x")
    assert settings.server.cors_origins == ("https://a.example",)


def test_empty_admin_and_client_tokens_are_left_out(tmp_path: Path) -> None:
    text = "admin_tokens: {ops: '${A}', dev: '${B}'}\nclient_tokens: {app: '${C}', other: fixed}\n"
    settings = load_settings(write(tmp_path, text), environ={"B": "b-token"})
    assert {name: t.get_secret_value() for name, t in settings.admin_tokens.items()} == {"dev": "b-token"}
    assert {name: t.get_secret_value() for name, t in settings.client_tokens.items()} == {"other": "fixed"}


# -- environment overrides ------------------------------------------------------------------------------


def test_gateway_database_url_overrides(tmp_path: Path) -> None:
    settings = load_settings(EXAMPLE, environ={"GATEWAY_DATABASE_URL": "postgresql+asyncpg://u@h/db"})
    assert settings.database_url == "postgresql+asyncpg://u@h/db"


def test_gateway_port_overrides() -> None:
    settings = load_settings(EXAMPLE, environ={"GATEWAY_PORT": "9090"})
    assert settings.server.port == 9090


def test_bad_gateway_port_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(EXAMPLE, environ={"GATEWAY_PORT": "http"})
    assert str(info.value).startswith("server.port: ")


def test_overrides_create_missing_sections(tmp_path: Path) -> None:
    environ = {"GATEWAY_PORT": "9091", "GATEWAY_LOG_LEVEL": "debug", "GATEWAY_SPOOL_DIR": "/tmp/spool-x"}
    settings = load_settings(write(tmp_path, "{}\n"), environ=environ)
    assert settings.server.port == 9091
    assert settings.logging.level == "debug"
    assert settings.recorder.spool_dir == "/tmp/spool-x"


def test_empty_override_changes_nothing() -> None:
    settings = load_settings(EXAMPLE, environ={"GATEWAY_DATABASE_URL": "", "GATEWAY_PORT": ""})
    assert settings.database_url == "sqlite+aiosqlite:///./gateway.db"
    assert settings.server.port == 8080


def test_gateway_admin_token_when_the_file_has_none(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "{}\n"), environ={"GATEWAY_ADMIN_TOKEN": "t0ken"})
    assert {name: t.get_secret_value() for name, t in settings.admin_tokens.items()} == {"admin": "t0ken"}


def test_gateway_admin_token_when_the_files_tokens_are_all_empty(tmp_path: Path) -> None:
    path = write(tmp_path, "admin_tokens: {ops: '${UNSET}'}\n")
    settings = load_settings(path, environ={"GATEWAY_ADMIN_TOKEN": "t0ken"})
    assert {name: t.get_secret_value() for name, t in settings.admin_tokens.items()} == {"admin": "t0ken"}


def test_gateway_admin_token_does_not_displace_tokens_the_file_sets(tmp_path: Path) -> None:
    # config.example.yaml: "GATEWAY_ADMIN_TOKEN -> admin_tokens {admin: ...}, when the file sets no admin token"
    path = write(tmp_path, "admin_tokens: {ops: from-file}\n")
    settings = load_settings(path, environ={"GATEWAY_ADMIN_TOKEN": "t0ken"})
    assert {name: t.get_secret_value() for name, t in settings.admin_tokens.items()} == {"ops": "from-file"}


# -- durations ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("15m", 900.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        ("2", 2.0),
        (45, 45.0),
        (0.25, 0.25),
        ("250ms", 0.25),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    data = minimal()
    data["deployments"]["support-bot"]["policy"] = {"check_interval": text}
    assert settings_from_dict(data).deployments["support-bot"].policy.check_interval == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["5 minutes", "15 min", "1w", "-1s", "", "ms", "1h30m", "soon", -1, 0, "0s", True, False, None, [1]]
)
def test_bad_durations_name_the_key(value: object) -> None:
    data = minimal()
    data["deployments"]["support-bot"]["policy"] = {"check_interval": value}
    message = config_error(data)
    assert message.startswith("deployments.support-bot.policy.check_interval: ")


@pytest.mark.parametrize("zero", [0, 0.0, "0", "0s", "0ms", "0h"])
def test_zero_means_none_where_it_has_a_meaning(zero: object) -> None:
    data = minimal()
    data["deployments"]["support-bot"]["policy"] = {"min_stage_duration": zero}
    data["server"] = {"shutdown_grace": zero}
    settings = settings_from_dict(data)
    assert settings.deployments["support-bot"].policy.min_stage_duration == 0.0
    assert settings.server.shutdown_grace == 0.0


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("policy", "check_interval"),
        ("policy", "latency_baseline"),
        ("policy", "max_stage_duration"),
        ("recorder", "flush_interval"),
        ("recorder", "max_backoff"),
        ("database", "pool_timeout"),
        ("database", "statement_timeout"),
        ("database", "refresh_interval"),
    ],
)
def test_zero_is_refused_where_it_has_no_meaning(section: str, key: str) -> None:
    data = minimal()
    if section == "policy":
        data["deployments"]["support-bot"]["policy"] = {key: "0s"}
        path = f"deployments.support-bot.policy.{key}"
    else:
        data[section] = {key: "0s"}
        path = f"{section}.{key}"
    assert config_error(data) == f"{path}: must be longer than zero: zero has no meaning for this setting"


def test_negative_durations_are_refused_even_where_zero_is_allowed() -> None:
    data = minimal()
    data["deployments"]["support-bot"]["policy"] = {"min_stage_duration": "-1s"}
    assert config_error(data).startswith("deployments.support-bot.policy.min_stage_duration: ")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), ".nan", ".inf"])
def test_non_finite_durations_are_refused(tmp_path: Path, value: object) -> None:
    if isinstance(value, str):
        path = write(tmp_path, f"deployments: {{}}\nserver: {{shutdown_grace: {value}}}\n")
        assert load_error(path).startswith("server.shutdown_grace: ")
    else:
        assert config_error({"server": {"shutdown_grace": value}}).startswith("server.shutdown_grace: ")


def test_duration_in_other_sections(tmp_path: Path) -> None:
    text = "recorder: {flush_interval: 50ms, max_backoff: 2m}\ndatabase: {refresh_interval: 200ms}\n"
    settings = load_settings(write(tmp_path, text), environ={})
    assert settings.recorder.flush_interval == pytest.approx(0.05)
    assert settings.recorder.max_backoff == 120.0
    assert settings.database.refresh_interval == pytest.approx(0.2)


# -- errors name the key path ------------------------------------------------------------------------------


def test_unknown_provider_in_a_version() -> None:
    data = minimal()
    data["deployments"]["support-bot"]["versions"]["v2"]["provider"] = "opnai"
    assert config_error(data) == "deployments.support-bot.versions.v2.provider: unknown provider 'opnai'"


def test_unknown_stable_version() -> None:
    data = minimal()
    data["deployments"]["support-bot"]["stable"] = "v9"
    assert config_error(data) == "deployments.support-bot.stable: unknown version 'v9'"


def test_unknown_canary_version() -> None:
    data = minimal()
    data["deployments"]["support-bot"]["canary"] = "v7"
    assert config_error(data) == "deployments.support-bot.canary: unknown version 'v7'"


def test_canary_equal_to_stable() -> None:
    data = minimal()
    data["deployments"]["support-bot"]["canary"] = "v1"
    assert config_error(data).startswith("deployments.support-bot.canary: ")


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ((), "bogus: unknown key"),
        (("server",), "server.bogus: unknown key"),
        (("providers", "openai"), "providers.openai.bogus: unknown key"),
        (("deployments", "support-bot"), "deployments.support-bot.bogus: unknown key"),
        (("deployments", "support-bot", "versions", "v1"), "deployments.support-bot.versions.v1.bogus: unknown key"),
    ],
)
def test_unknown_key_names_its_path(where: tuple[str, ...], expected: str) -> None:
    data = minimal()
    section = data
    for key in where:
        section = section.setdefault(key, {})
    section["bogus"] = 1
    assert config_error(data) == expected


def test_unknown_policy_key() -> None:
    data = minimal()
    data["deployments"]["support-bot"]["policy"] = {"stage": [5, 100]}
    assert config_error(data) == "deployments.support-bot.policy.stage: unknown key"


def test_missing_required_key() -> None:
    data = minimal()
    del data["deployments"]["support-bot"]["versions"]["v1"]["model"]
    assert config_error(data) == "deployments.support-bot.versions.v1.model: required key is missing"


@pytest.mark.parametrize(
    "stages", [[5, 50, 25], [5, 5, 25], [25, 5], [0, 50], [5, 101], [-5, 100], [5.001, 100], []]
)
def test_bad_stages(stages: list[float]) -> None:
    data = minimal()
    data["deployments"]["support-bot"]["policy"] = {"stages": stages}
    assert config_error(data).startswith("deployments.support-bot.policy.stages: ")


@pytest.mark.parametrize("stages", [[5, 25, 50, 100], [0.05, 100], [100], [1, 2.5, 99.99]])
def test_good_stages(stages: list[float]) -> None:
    data = minimal()
    data["deployments"]["support-bot"]["policy"] = {"stages": stages}
    assert settings_from_dict(data).deployments["support-bot"].policy.stages == tuple(stages)


def test_unknown_database_driver() -> None:
    data = minimal()
    data["database_url"] = "mysql://u@h/db"
    assert config_error(data).startswith("database_url: ")


def test_bad_provider_kind() -> None:
    data = minimal()
    data["providers"]["openai"]["kind"] = "azure"
    assert config_error(data).startswith("providers.openai.kind: ")


def test_reserved_version_params() -> None:
    data = minimal()
    data["deployments"]["support-bot"]["versions"]["v2"]["params"] = {"stream": True}
    assert config_error(data).startswith("deployments.support-bot.versions.v2.params: ")


def test_bad_deployment_name() -> None:
    data = minimal()
    data["deployments"]["bad name!"] = data["deployments"].pop("support-bot")
    message = config_error(data)
    assert message.startswith("deployments")
    assert "bad name!" in message


def test_errors_are_config_errors_from_load_settings(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    v2 = text.index("      v2:\n")
    start = text.index("provider: openai", v2)
    text = text[:start] + "provider: opnai" + text[start + len("provider: openai") :]
    message = load_error(write(tmp_path, text))
    assert message == "deployments.support-bot.versions.v2.provider: unknown provider 'opnai'"


# -- provider base_url safety ------------------------------------------------------------------------------------


def with_base_url(url: str, **extra: Any) -> dict[str, Any]:
    data = minimal()
    data["providers"]["openai"] = {"kind": "openai", "base_url": url, **extra}
    return data


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://169.254.169.254:80/v1",
        "http://metadata.google.internal/computeMetadata/v1",
        "http://METADATA.GOOGLE.INTERNAL/",
        "http://[fe80::1]/v1",
        "http://0.0.0.0:8000/v1",
    ],
)
def test_link_local_and_metadata_hosts_are_refused(url: str) -> None:
    message = config_error(with_base_url(url))
    assert message.startswith("providers.openai")
    assert "base_url" in message


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://metadata.google.internal/computeMetadata/v1",
        "http://[fe80::1]/v1",
    ],
)
def test_allow_unsafe_url_permits_them(url: str) -> None:
    settings = settings_from_dict(with_base_url(url, allow_unsafe_url=True))
    assert settings.providers["openai"].base_url == url


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/v1",
        "gopher://example.com/",
        "http://user:pw@api.example.com/v1",
        "https://user@api.example.com/v1",
        "https://api.example.com/v1#fragment",
        "https://api.example.com/v1#",
        "https://api.example.com/v1?key=x",
        "https:///v1",
        "api.openai.com/v1",
        "",
    ],
)
@pytest.mark.parametrize("allow_unsafe", [False, True])
def test_malformed_or_credential_urls_are_always_refused(url: str, allow_unsafe: bool) -> None:
    # allow_unsafe_url permits link-local / metadata addresses, not another scheme or a key leak.
    message = config_error(with_base_url(url, allow_unsafe_url=allow_unsafe))
    assert message.startswith("providers.openai")
    assert "base_url" in message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9999",
        "http://127.0.0.1:9999/v1",
        "http://localhost:11434/v1",
        "https://api.openai.com/v1",
        "https://api.anthropic.com",
        "http://10.0.0.5:8000/v1",
        "http://[::1]:8000/v1",
    ],
)
def test_ordinary_urls_are_allowed(url: str) -> None:
    assert settings_from_dict(with_base_url(url)).providers["openai"].base_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://[::ffff:169.254.169.254]/latest",  # IPv4-mapped IPv6
        "http://metadata.google.internal./computeMetadata/v1",  # trailing dot, same DNS name
        "http://2852039166/latest",  # 169.254.169.254 as one decimal number (inet_aton form)
        "http://0xa9fea9fe/latest",  # the same in hex
    ],
)
def test_other_spellings_of_metadata_addresses_are_refused(url: str) -> None:
    message = config_error(with_base_url(url))
    assert message.startswith("providers.openai")


# -- reading the file -----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = load_error(path)
    assert message.startswith(str(path))


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    assert load_error(tmp_path).startswith(str(tmp_path))


@pytest.mark.parametrize(
    "text",
    ["database_url: [unclosed\n", "a: b: c\n", "key: 'unterminated\n", "\tindented: tab\n", "x: 1\n  y: 2\n"],
)
def test_invalid_yaml_is_one_line(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    message = load_error(path)
    assert message.startswith(str(path))
    assert "YAML" in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert load_error(path).startswith(str(path))


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), environ={})
    assert settings.deployments == {}
    assert settings.database_url == "sqlite+aiosqlite:///./gateway.db"


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"database_url: \xff\xfe caf\xe9\n")
    assert load_error(path).startswith(str(path))


def test_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    path = write(tmp_path, "database_url: !!python/object/apply:os.system ['true']\n")
    assert load_error(path).startswith(str(path))


# -- declared deployments ------------------------------------------------------------------------------------


def test_declared_canary_starts_at_the_first_stage() -> None:
    data = minimal()
    data["deployments"]["support-bot"]["policy"] = {"stages": [2.5, 50, 100]}
    deployment = declared_deployments(settings_from_dict(data))["support-bot"]
    assert deployment.name == "support-bot"
    assert deployment.rollout.stable == "v1"
    assert deployment.rollout.canary == "v2"
    assert deployment.rollout.canary_percent == 2.5
    assert deployment.rollout.status == "canary"


def test_example_declares_a_five_percent_canary() -> None:
    deployment = declared_deployments(load_settings(EXAMPLE, environ={}))["support-bot"]
    assert deployment.rollout.canary_percent == 5.0
    assert deployment.anonymous == "stable"
    v2 = deployment.versions["v2"]
    assert v2.model == "gpt-4o-mini"
    assert v2.system_prompt == "You are a concise, helpful assistant."
    assert dict(v2.params) == {"temperature": 0.3}
    assert v2.few_shot[0] == {"role": "user", "content": "How do I reset my password?"}
    assert v2.prompt_mode == "replace"


def test_no_declared_canary_means_zero_percent() -> None:
    data = minimal()
    del data["deployments"]["support-bot"]["canary"]
    data["deployments"]["support-bot"]["anonymous"] = "random"
    deployment = declared_deployments(settings_from_dict(data))["support-bot"]
    assert deployment.rollout.canary is None
    assert deployment.rollout.canary_percent == 0.0
    assert deployment.rollout.status == "stable"
    assert deployment.anonymous == "random"
    assert set(deployment.versions) == {"v1", "v2"}


def test_declared_versions_carry_their_content() -> None:
    data = copy.deepcopy(minimal())
    data["deployments"]["support-bot"]["versions"]["v2"].update(
        {"params": {"top_p": 0.5}, "prompt_mode": "append", "few_shot": [{"role": "assistant", "content": "ok"}]}
    )
    versions = declared_deployments(settings_from_dict(data))["support-bot"].versions
    assert versions["v1"].system_prompt == "one"
    assert versions["v1"].provider == "openai"
    assert versions["v2"].prompt_mode == "append"
    assert dict(versions["v2"].params) == {"top_p": 0.5}
    assert versions["v2"].few_shot == ({"role": "assistant", "content": "ok"},)
    # The content hash sees every field: v1 and v2 differ.
    assert versions["v1"].content_hash() != versions["v2"].content_hash()


@pytest.mark.parametrize(("field", "value", "wording"), [
    ("system_prompt", "be\x00nice", "system_prompt must not contain NUL characters"),
    ("system_prompt", "x\ud800", "system_prompt must not contain unpaired surrogates (text that is not UTF-8)"),
    ("params", {"logit_bias": {"\x00": 1}}, "params must not contain NUL characters"),
])
def test_version_text_a_database_cannot_store_is_refused(field: str, value: object, wording: str) -> None:
    data = minimal()
    data["deployments"]["support-bot"]["versions"]["v2"][field] = value
    assert config_error(data) == f"deployments.support-bot.versions.v2: {wording}"


def test_a_provider_speaks_its_kinds_default_api_unless_it_declares_another() -> None:
    data = minimal()
    data["providers"]["claude"] = {"kind": "anthropic", "base_url": "https://api.anthropic.com"}
    data["providers"]["sim"] = {"kind": "simulated", "simulation": {"api": "messages"}}
    data["providers"]["responses"] = {"kind": "openai", "base_url": "https://api.openai.com/v1", "api": "responses"}
    providers = settings_from_dict(data).providers
    assert {name: provider.api for name, provider in providers.items()} == {
        "openai": "chat_completions", "claude": "messages", "sim": "messages", "responses": "responses"}


@pytest.mark.parametrize(("provider", "expected"), [
    ({"kind": "anthropic", "base_url": "https://api.anthropic.com", "api": "responses"},
     "providers.p.api: a provider of kind anthropic speaks messages, not 'responses'"),
    ({"kind": "openai", "base_url": "https://api.openai.com/v1", "api": "messages"},
     "providers.p.api: a provider of kind openai speaks chat_completions or responses, not 'messages'"),
    ({"kind": "simulated", "api": "responses"},
     "providers.p.api: a simulated provider speaks its simulation.api ('chat_completions'); set simulation.api "
     "instead of api 'responses'"),
])
def test_an_api_the_providers_kind_does_not_speak_stops_the_start(provider: dict[str, Any], expected: str) -> None:
    data = minimal()
    data["providers"]["p"] = provider
    assert expected in config_error(data)


@pytest.mark.parametrize(("params", "param"), [({"stop": ["\n"]}, "stop"), ({"seed": 7}, "seed"), ({"n": 2}, "n"),
                                               ({"max_output_tokens": 50}, "max_output_tokens")])
def test_a_version_on_the_responses_api_with_params_it_has_no_field_for_does_not_load(
        params: dict[str, Any], param: str) -> None:
    data = minimal()
    data["providers"]["openai"]["api"] = "responses"
    data["deployments"]["support-bot"]["versions"]["v2"]["params"] = params
    message = config_error(data)
    assert message.startswith(f"deployments.support-bot.versions.v2.params.{param}: ")
    assert "(the provider speaks OpenAI's Responses API)" in message


def test_a_version_on_the_responses_api_takes_chat_params_it_can_map_and_neutral_values() -> None:
    data = minimal()
    data["providers"]["openai"]["api"] = "responses"
    params = {"max_tokens": 100, "temperature": 0.2, "response_format": {"type": "json_object"}, "n": 1,
              "presence_penalty": 0, "stop": None}
    data["deployments"]["support-bot"]["versions"]["v2"]["params"] = params
    assert settings_from_dict(data).deployments["support-bot"].versions["v2"].params == params
