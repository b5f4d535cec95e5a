"""The README's commands and configuration are the ones that work."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from gateway.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_first_command_is_the_demo_and_the_second_runs_the_tests() -> None:
    commands = re.findall(r"```bash\n(.+?)\n```", README, re.DOTALL)
    assert commands[0] == "pip install -e . && canary-gateway demo"
    assert commands[1] == "pip install -e '.[dev]' && python -m pytest"


def test_the_walkthrough_config_loads_with_a_real_provider_and_with_the_simulated_one(tmp_path: Path) -> None:
    section = README[README.index("## Your first real rollout"):]
    text = re.search(r"```yaml\n(.+?)\n   ```", section, re.DOTALL)
    assert text is not None
    config = tmp_path / "config.yaml"
    config.write_text("\n".join(line.removeprefix("   ") for line in text.group(1).splitlines()))
    environ = {"GATEWAY_ADMIN_TOKEN": "admin", "GATEWAY_USER_ID_SALT": "salt", "OPENAI_API_KEY": "sk-x"}
    settings = load_settings(config, environ=environ)
    assert settings.deployments["support-bot"].versions["v1"].provider == "openai"
    offline = yaml.safe_load(config.read_text())
    offline_providers = re.search(r"`(providers: \{openai: \{kind: simulated\}\})`", section)
    assert offline_providers is not None, "the README no longer shows the offline providers line"
    offline["providers"] = yaml.safe_load(offline_providers.group(1))["providers"]
    config.write_text(yaml.safe_dump(offline))
    assert load_settings(config, environ=environ).providers["openai"].kind == "simulated"
