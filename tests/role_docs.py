"""Render each role's variable table in roles/<role>/README.md from meta/argument_specs.yml.

    python tests/role_docs.py          rewrite the tables in place
    python tests/role_docs.py --check  exit 1 if a table is out of date (used by make unit)

The table sits between the markers <!-- BEGIN VARIABLES --> and <!-- END VARIABLES -->; the rest of
the README is written by hand.
"""

import json
import sys
from pathlib import Path

import yaml

ROLES_DIR = Path(__file__).resolve().parent.parent / "roles"
BEGIN = "<!-- BEGIN VARIABLES -->"
END = "<!-- END VARIABLES -->"


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_default(option):
    if option.get("no_log"):
        default = option.get("default")
        if isinstance(default, str) and default.startswith("{{"):
            return f"`{default}`"
        return "*(secret)*" if default in ("", None) else "*(set)*"
    value = option.get("default")
    if value == "" or value is None:
        return '`""`'
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def render_table(spec):
    options = spec["argument_specs"]["main"]["options"]
    lines = ["| variable | type | default | description |", "|---|---|---|---|"]
    for name, option in options.items():
        kind = option["type"]
        if option.get("elements"):
            kind = f"{kind} of {option['elements']}"
        if option.get("choices"):
            kind += " (" + ", ".join(f"`{c}`" for c in option["choices"]) + ")"
        description = option["description"]
        if isinstance(description, list):
            description = " ".join(description)
        lines.append(f"| `{name}` | {cell(kind)} | {cell(render_default(option))} | {cell(description)} |")
    return "\n".join(lines)


def updated_readme(role):
    readme = role / "README.md"
    spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: missing {BEGIN} / {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return readme, f"{head}{BEGIN}\n{render_table(spec)}\n{END}{tail}"


def main(argv):
    check = "--check" in argv
    stale = []
    for role in sorted(p for p in ROLES_DIR.iterdir() if (p / "meta" / "argument_specs.yml").exists()):
        readme, text = updated_readme(role)
        if readme.read_text() != text:
            stale.append(str(readme))
            if not check:
                readme.write_text(text)
    if check and stale:
        print("out of date (run: python tests/role_docs.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
