"""Runs the release binary with exactly the environment each deployment gives it, up to
SERVING: the image alone (the Dockerfile's ENV and CMD), each Compose service built from it
(the image's ENV, then the service's environment and command), and each Kubernetes container
(the image's ENV, then the container's env and args). Then it asks with the image's own
HEALTHCHECK command, in the same environment. Run by `make deploy-check`.

What only a real deployment has is stood in for: mounted paths (/run/secrets/..., /data) are
mapped into a temporary directory, secrets get made-up values (the database URL names a fresh
database on the local PostgreSQL, TEST_DATABASE_URL), and listen addresses get free local
ports. Everything else is passed as the deployment files say."""

import base64
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
SERVING_WITHIN = 30


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dockerfile(path):
    """The image's ENV (in order) and its HEALTHCHECK command's arguments."""
    with open(path, encoding="utf-8") as file:
        text = re.sub(r"\\\n", " ", file.read())
    env, healthcheck = {}, []
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        if len(words) < 2:
            continue
        if words[0] == "ENV":
            for pair in shlex.split(words[1]):
                key, _, value = pair.partition("=")
                env[key] = value
        elif words[0] == "HEALTHCHECK":
            command = words[1].split("CMD", 1)[1].strip()
            healthcheck = yaml.safe_load(command)
    return env, healthcheck


def as_env(environment):
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in (environment or {}).items()}


def compose_runs(path):
    with open(path, encoding="utf-8") as file:
        compose = yaml.safe_load(file)
    for name, service in (compose.get("services") or {}).items():
        if "build" in service or str(service.get("image", "")).startswith("user-service"):
            yield f"{path}: {name}", as_env(service.get("environment")), service.get("command") or []


def kubernetes_runs(paths):
    for path in paths:
        with open(path, encoding="utf-8") as file:
            documents = list(yaml.safe_load_all(file))
        for document in documents:
            if not document or document.get("kind") not in ("Deployment", "StatefulSet"):
                continue
            for container in document["spec"]["template"]["spec"]["containers"]:
                env = {}
                for entry in container.get("env") or []:
                    if "value" in entry:
                        env[entry["name"]] = str(entry["value"])
                    else:
                        key = entry["valueFrom"]["secretKeyRef"]["key"]
                        env[entry["name"]] = f"secret:{key}"
                yield f"{path}: {container['name']}", env, container.get("args") or []


class Stand:
    """The stand-ins for what a deployment mounts and provides."""

    def __init__(self, directory, database_url):
        self.directory = directory
        self.database_url = database_url
        # One free port for each address the files name, wherever they name it.
        self.ports = {}

    def secret(self, name):
        if "database" in name:
            return self.database_url
        if "jwt" in name or "key" in name:
            return base64.b64encode(secrets.token_bytes(48)).decode()
        return secrets.token_hex(16)

    def value(self, key, value):
        if value.startswith("secret:"):
            return self.secret(value[len("secret:"):])
        if value.startswith("/run/secrets/"):
            name = value[len("/run/secrets/"):]
            path = os.path.join(self.directory, "secrets", name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as file:
                file.write(self.secret(name) + "\n")
            return path
        if value.startswith("sqlite:///data/"):
            os.makedirs(os.path.join(self.directory, "data"), exist_ok=True)
            return "sqlite://" + os.path.join(self.directory, value[len("sqlite:///"):])
        if key.endswith("_LISTEN") or re.fullmatch(r"0\.0\.0\.0:\d+", value):
            port = self.ports.setdefault(value, free_port())
            return f"127.0.0.1:{port}"
        return value


def run(binary, what, env, args, healthcheck):
    """Starts the binary with `env` alone (and PATH), waits until the image's own HEALTHCHECK
    command, run with the same environment as a container runtime runs it, reports SERVING,
    then stops the server."""
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    server = subprocess.Popen([binary, *args], env=full_env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + SERVING_WITHIN
        probe = [binary, *healthcheck[1:]]
        while True:
            if server.poll() is not None:
                return f"{what}: the server exited ({server.returncode}): {server.stderr.read()[-2000:]}"
            checked = subprocess.run(probe, env=full_env, capture_output=True, text=True)
            if checked.returncode == 0:
                break
            if time.monotonic() > deadline:
                return f"{what}: not SERVING within {SERVING_WITHIN} s: {checked.stderr.strip()}"
            time.sleep(0.5)
        print(f"{what}: SERVING (the image's HEALTHCHECK says so)")
        return None
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def main(binary):
    image_env, healthcheck = dockerfile(os.path.join(ROOT, "Dockerfile"))
    database = f"deploy_check_{os.getpid()}"
    admin = ["psql", ADMIN_URL, "-qAt", "-c"]
    subprocess.run([*admin, f"CREATE DATABASE {database}"], check=True)
    base, _, _ = ADMIN_URL.rpartition("/")
    database_url = f"{base}/{database}"
    problems = []
    try:
        runs = [("Dockerfile", {}, [])]
        runs += list(compose_runs(os.path.join(ROOT, "deploy", "compose.yaml")))
        manifests = os.path.join(ROOT, "deploy", "kubernetes")
        runs += list(kubernetes_runs(sorted(
            os.path.join(manifests, name) for name in os.listdir(manifests) if name.endswith(".yaml")
        )))
        for what, env, args in runs:
            with tempfile.TemporaryDirectory() as directory:
                stand = Stand(directory, database_url)
                merged = {**image_env, **env}
                merged = {key: stand.value(key, value) for key, value in merged.items()}
                args = [stand.value("", str(arg)) for arg in args]
                problem = run(binary, what, merged, args, healthcheck)
                if problem:
                    problems.append(problem)
    finally:
        subprocess.run([*admin, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"], check=False)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/user-service")))
