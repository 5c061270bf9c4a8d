"""What a container sees: its volumes as real directories, and its environment.

Volumes. ``configMap``, ``secret`` and ``emptyDir`` volumes become directories under the pod's
folder, laid out the way the kubelet lays them out, so a reader sees atomic updates:
``<volume>/..<stamp>/`` holds the files, ``<volume>/..data`` is a symlink to the current stamp
folder, and every top-level entry (``flags.json``) is a symlink through ``..data``. An update
writes a new stamp folder and swaps ``..data`` with one ``rename`` (the shop notices the new
inode on its next ``stat``). ConfigMap volumes follow the ConfigMap (the cluster calls
:meth:`Volumes.refresh` on every change); secrets are read once at start (documented gap).

Mount paths. A process cannot see ``/etc/shop/flags``, so the container's ``volumeMounts`` are
mapped to those directories in two ways, both documented for image authors:

1. every environment value that *is* a mount path or starts with one (``/etc/shop/flags`` or
   ``/etc/shop/flags/flags.json``) is rewritten to the real path: a manifest written for a real
   cluster (``SHOP_FLAGS_FILE=/etc/shop/flags/flags.json``) works unchanged;
2. ``SANDBOX_MOUNTS`` holds ``{"<mountPath>": "<real path>"}`` as JSON, and each mount also
   gets ``SANDBOX_MOUNT_<PATH>`` (the path upper-cased, non-alphanumerics as ``_``:
   ``/etc/shop/flags`` -> ``SANDBOX_MOUNT_ETC_SHOP_FLAGS``), for programs that build paths.

Environment. ``envFrom`` then ``env`` (``value`` with ``$(VAR)`` expansion, ``valueFrom``
ConfigMap/Secret keys and ``fieldRef``), then what the runner owns: ``PORT`` (the real port),
``SHOP_IMAGE``, ``POD_NAME``, ``POD_NAMESPACE``, ``POD_IP``, ``HOSTNAME``. The host's own
environment is *not* inherited (a container's is not), except what a Python process needs to
run at all (``PATH``, ``LANG``, ``PYTHONPATH`` with this repository, ``TZ``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import sandbox

Fetch = Callable[[str, str], dict[str, Any] | None]
"""``fetch(namespace, name)`` -> the ConfigMap / Secret as a dict, or ``None`` if missing."""


class MountError(Exception):
    """A volume cannot be set up yet (e.g. its ConfigMap does not exist): retried later."""


class Volumes:
    """The pod's volumes under ``root``; ``paths`` maps volume name -> real directory."""

    def __init__(self, pod: Mapping[str, Any], root: Path):
        self.pod = pod
        self.root = root
        self.paths: dict[str, Path] = {}
        self.specs = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}

    def configmaps(self) -> set[str]:
        return {
            (v.get("configMap") or {}).get("name", "")
            for v in self.specs.values()
            if v.get("configMap")
        }

    def setup(self, fetch_configmap: Fetch, fetch_secret: Fetch) -> None:
        """Create every volume; raises :class:`MountError` naming the first that cannot be."""
        namespace = (self.pod.get("metadata") or {}).get("namespace") or "default"
        for name, spec in self.specs.items():
            target = self.root / name
            if spec.get("configMap") is not None:
                source = spec["configMap"]
                found = fetch_configmap(namespace, source.get("name", ""))
                files = _files(found, source, "configmap", name, secret=False)
                _publish(target, files, int(source.get("defaultMode") or 0o644))
            elif spec.get("secret") is not None:
                source = spec["secret"]
                found = fetch_secret(namespace, source.get("secretName", ""))
                files = _files(found, source, "secret", name, secret=True)
                _publish(target, files, int(source.get("defaultMode") or 0o644))
            else:  # emptyDir and anything else: an empty directory of the pod's own
                target.mkdir(parents=True, exist_ok=True)
            self.paths[name] = target

    def refresh(self, configmap: str, fetch_configmap: Fetch) -> bool:
        """Rewrite the volumes of ConfigMap ``configmap``; True if any content changed."""
        namespace = (self.pod.get("metadata") or {}).get("namespace") or "default"
        changed = False
        for name, spec in self.specs.items():
            source = spec.get("configMap")
            if not source or source.get("name") != configmap or name not in self.paths:
                continue
            try:
                files = _files(
                    fetch_configmap(namespace, configmap), source, "configmap", name, secret=False
                )
            except MountError:
                continue  # deleted: the kubelet keeps the last content too
            changed |= _publish(self.paths[name], files, int(source.get("defaultMode") or 0o644))
        return changed

    def mounts(self, container: Mapping[str, Any]) -> dict[str, str]:
        """``{mountPath: real path}`` of one container (``subPath`` resolved)."""
        out: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            base = self.paths.get(mount.get("name", ""))
            if base is None or not mount.get("mountPath"):
                continue
            real = base / mount["subPath"] if mount.get("subPath") else base
            out[mount["mountPath"].rstrip("/") or "/"] = str(real)
        return out

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _files(
    found: Mapping[str, Any] | None,
    source: Mapping[str, Any],
    what: str,
    volume: str,
    *,
    secret: bool,
) -> dict[str, bytes]:
    name = source.get("secretName" if secret else "name", "")
    if found is None:
        if source.get("optional"):
            return {}
        raise MountError(
            f'MountVolume.SetUp failed for volume "{volume}" : {what} "{name}" not found'
        )
    data: dict[str, bytes] = {}
    for k, v in (found.get("data") or {}).items():
        data[k] = base64.b64decode(v) if secret else str(v).encode()
    for k, v in (found.get("binaryData") or {}).items():
        data[k] = base64.b64decode(v)
    items = source.get("items")
    if not items:
        return data
    out: dict[str, bytes] = {}
    for item in items:
        if item.get("key") not in data:
            if source.get("optional"):
                continue
            raise MountError(
                f'MountVolume.SetUp failed for volume "{volume}" : {what} "{name}" has no key '
                f'"{item.get("key")}"'
            )
        out[item.get("path") or item["key"]] = data[item["key"]]
    return out


def _publish(target: Path, files: Mapping[str, bytes], mode: int) -> bool:
    """Write ``files`` as the kubelet's atomic writer does; False when nothing changed."""
    target.mkdir(parents=True, exist_ok=True)
    current = target / "..data"
    if current.exists() and _read_tree(current) == dict(files):
        return False
    stamp = target / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir()
    for relative, content in files.items():
        path = stamp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode & 0o777)
    link = target / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(stamp.name)
    old = os.readlink(current) if current.is_symlink() else None
    link.replace(current)  # the atomic switch
    tops = {Path(relative).parts[0] for relative in files}
    for entry in target.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.name not in tops and entry.is_symlink():
            entry.unlink()
    for top in tops:
        entry = target / top
        if not entry.is_symlink():
            entry.symlink_to(Path("..data") / top)
    if old and old != stamp.name:
        shutil.rmtree(target / old, ignore_errors=True)
    return True


def _read_tree(root: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for path in root.rglob("*"):
        if path.is_file():
            out[str(path.relative_to(root))] = path.read_bytes()
    return out


# -- environment --------------------------------------------------------------------------------

_EXPAND = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known names replaced, ``$$`` -> ``$``, others kept."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _EXPAND.sub(one, value)


def mount_variable(mount_path: str) -> str:
    return "SANDBOX_MOUNT_" + (
        re.sub(r"[^A-Za-z0-9]+", "_", mount_path).strip("_").upper() or "ROOT"
    )


def rewrite_paths(value: str, mounts: Mapping[str, str]) -> str:
    """``/etc/shop/flags/flags.json`` -> ``<real volume dir>/flags.json`` (longest mount wins)."""
    for mount_path in sorted(mounts, key=len, reverse=True):
        if value == mount_path:
            return mounts[mount_path]
        prefix = mount_path if mount_path.endswith("/") else mount_path + "/"
        if value.startswith(prefix):
            return mounts[mount_path].rstrip("/") + "/" + value[len(prefix) :]
    return value


def base_environment() -> dict[str, str]:
    """What any process needs to run, and nothing else from the host."""
    repository = str(Path(sandbox.__file__).resolve().parent.parent)
    python_path = os.pathsep.join(p for p in (repository, os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1"}
    for name in ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    port: int,
    mounts: Mapping[str, str],
    fetch_configmap: Fetch,
    fetch_secret: Fetch,
    node_name: str,
    home: Path,
) -> dict[str, str]:
    meta = pod.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        if source.get("configMapRef"):
            found = fetch_configmap(namespace, source["configMapRef"].get("name", ""))
            data = {k: str(v) for k, v in ((found or {}).get("data") or {}).items()}
        elif source.get("secretRef"):
            found = fetch_secret(namespace, source["secretRef"].get("name", ""))
            data = {
                k: base64.b64decode(v).decode(errors="replace")
                for k, v in ((found or {}).get("data") or {}).items()
            }
        else:
            continue
        env.update({prefix + k: v for k, v in data.items()})
    for item in container.get("env") or []:
        name = item.get("name")
        if not name:
            continue
        if item.get("valueFrom"):
            resolved = _value_from(pod, item["valueFrom"], namespace, fetch_configmap, fetch_secret)
            if resolved is not None:
                env[name] = resolved
        else:
            env[name] = expand(str(item.get("value") or ""), env)
    env = {k: rewrite_paths(v, mounts) for k, v in env.items()}
    env.update(
        {
            "PORT": str(port),
            "SHOP_IMAGE": str(container.get("image") or ""),
            "POD_NAME": meta.get("name") or "",
            "POD_NAMESPACE": namespace,
            "POD_IP": "127.0.0.1",
            "NODE_NAME": node_name,
            "HOSTNAME": meta.get("name") or "",
            "HOME": str(home),
            "SANDBOX_MOUNTS": json.dumps(dict(mounts), sort_keys=True),
        }
    )
    for mount_path, real in mounts.items():
        env[mount_variable(mount_path)] = real
    return base_environment() | env


def _value_from(
    pod: Mapping[str, Any],
    source: Mapping[str, Any],
    namespace: str,
    fetch_configmap: Fetch,
    fetch_secret: Fetch,
) -> str | None:
    if source.get("configMapKeyRef"):
        ref = source["configMapKeyRef"]
        found = fetch_configmap(namespace, ref.get("name", ""))
        value = ((found or {}).get("data") or {}).get(ref.get("key", ""))
        return None if value is None else str(value)
    if source.get("secretKeyRef"):
        ref = source["secretKeyRef"]
        found = fetch_secret(namespace, ref.get("name", ""))
        value = ((found or {}).get("data") or {}).get(ref.get("key", ""))
        return None if value is None else base64.b64decode(value).decode(errors="replace")
    if source.get("fieldRef"):
        path = str(source["fieldRef"].get("fieldPath", ""))
        meta = pod.get("metadata") or {}
        simple = {
            "metadata.name": meta.get("name"),
            "metadata.namespace": meta.get("namespace"),
            "metadata.uid": meta.get("uid"),
            "spec.nodeName": (pod.get("spec") or {}).get("nodeName"),
            "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName"),
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
        }
        if path in simple:
            return str(simple[path] or "")
        match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if match:
            return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    return None
