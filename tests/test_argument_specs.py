"""Each role's meta/argument_specs.yml agrees with its defaults/main.yml, keys and values."""

from pathlib import Path

import pytest
import yaml

ROLES_DIR = Path(__file__).resolve().parent.parent / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "tasks" / "main.yml").exists())


def load(path):
    with path.open() as stream:
        return yaml.safe_load(stream) or {}


@pytest.fixture(params=ROLES)
def role(request):
    return ROLES_DIR / request.param


def spec_options(role):
    spec = load(role / "meta" / "argument_specs.yml")
    return spec["argument_specs"]["main"]["options"]


def test_every_role_has_a_spec_and_defaults(role):
    assert (role / "meta" / "argument_specs.yml").is_file()
    assert (role / "defaults" / "main.yml").is_file()


def test_spec_and_defaults_have_the_same_keys(role):
    defaults = load(role / "defaults" / "main.yml")
    options = spec_options(role)
    assert sorted(defaults) == sorted(options), (
        f"only in defaults: {sorted(set(defaults) - set(options))}; "
        f"only in spec: {sorted(set(options) - set(defaults))}"
    )


def test_spec_defaults_equal_role_defaults(role):
    defaults = load(role / "defaults" / "main.yml")
    for name, option in spec_options(role).items():
        assert "default" in option, f"{name}: spec has no default"
        assert option["default"] == defaults[name], f"{name}: spec and defaults differ"


def test_every_option_is_described_and_typed(role):
    for name, option in spec_options(role).items():
        assert option.get("type"), f"{name}: no type"
        assert option.get("description"), f"{name}: no description"
        if option["type"] == "list":
            assert option.get("elements"), f"{name}: list without elements"


def test_public_variables_carry_the_role_prefix(role):
    for name in spec_options(role):
        assert name.startswith(f"{role.name}_"), name


def test_role_readme_tables_are_generated_from_the_spec():
    import role_docs

    assert role_docs.main(["--check"]) == 0, "run: python tests/role_docs.py"
