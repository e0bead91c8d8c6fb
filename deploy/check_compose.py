"""Checks a Compose file: it parses as YAML, and every service sets its image, its command
and a health check. Run by `make deploy-check`."""

import sys

import yaml


def problems(path):
    with open(path, encoding="utf-8") as file:
        compose = yaml.safe_load(file)
    services = (compose or {}).get("services") or {}
    if not services:
        yield f"{path}: no services"
    for name, service in services.items():
        for key in ("image", "command"):
            if not service.get(key):
                yield f"{path}: service {name} sets no {key}"
        if not (service.get("healthcheck") or {}).get("test"):
            yield f"{path}: service {name} has no health check"


if __name__ == "__main__":
    found = [problem for path in sys.argv[1:] for problem in problems(path)]
    for problem in found:
        print(problem, file=sys.stderr)
    sys.exit(1 if found else 0)
