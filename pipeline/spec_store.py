"""Specs kept with the versions they trained, so a registered model's name is all a command needs.

Every registered version records ``lineage["spec_uri"]``: the spec it was trained with, as JSON
(views' SQL included), at ``s3://<artifact bucket>/models/<model>/specs/<spec sha256>.json``
(written once; the digest is ``ModelSpec.digest``). ``stagewise explain``, ``review`` and
``query`` find a model's spec from the registry through it (``resolve_spec``), whether the model
is built in or was trained from a user's own spec file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stagewise.pipeline.spec import ModelSpec, SpecError, builtin_spec_names, load_spec, parse_spec
from stagewise.pipeline.version_files import check_spec_digest
from stagewise.platform.runtime.objects import ObjectStore, S3Uri, StorageError
from stagewise.registry.errors import NotFound
from stagewise.registry.records import VersionRecord


def spec_key(model: str, digest: str) -> str:
    """Where a spec is kept in the artifact bucket: ``models/<model>/specs/<spec sha256>.json``
    (under ``models/``, so the roles that read and copy artifacts reach it)."""
    return f"models/{model}/specs/{digest}.json"


def store_spec(objects: ObjectStore, bucket: str, spec: ModelSpec) -> str:
    """Keep ``spec`` (its JSON form) in the artifact bucket under its digest, written once;
    returns its ``s3://`` URI (the version's ``lineage["spec_uri"]``)."""
    key = spec_key(spec.name, spec.digest())
    objects.put_new(bucket, key, json.dumps(spec.model_dump(mode="json"), indent=1).encode(), "application/json")
    return f"s3://{bucket}/{key}"


def version_spec(objects: ObjectStore, version: VersionRecord) -> ModelSpec | None:
    """The spec ``version`` was trained with, or None when it recorded none (registered by hand,
    or before specs were kept).

    Raises:
        SpecError: the stored spec is missing or no longer valid.
        ChecksumMismatch: its digest is not the one recorded at registration (it was changed).
    """
    uri = version.lineage.get("spec_uri")
    if not uri:
        return None
    loc = S3Uri.parse(uri)
    try:
        raw = json.loads(objects.get_bytes(loc.bucket, loc.key))
    except StorageError as e:
        raise SpecError(f"the spec of {version.model} v{version.version} ({uri}) cannot be read: {e}") from e
    spec = parse_spec(raw, f"spec of {version.model} v{version.version}")
    check_spec_digest(version, spec.digest(), uri)
    return spec


def is_spec_path(name_or_path: str) -> bool:
    """True when ``name_or_path`` names a spec file rather than a model."""
    path = Path(name_or_path)
    return path.suffix in (".yaml", ".yml") or path.is_file()


def resolve_spec(name_or_path: str, registry: Any, objects: ObjectStore, version: int | None = None) -> ModelSpec:
    """The spec of a model given as a spec file, a registered model's name or a built-in name.

    A file is read as it is. A registered model's spec is the one its version ``version`` (default:
    the champion, else the newest version that kept one) was trained with. A built-in name that
    is not registered yet gives the built-in spec.

    Raises:
        SpecError: none of those (the message lists the registered models and built-in specs).
    """
    if is_spec_path(name_or_path):
        return load_spec(name_or_path)
    try:
        model = registry.get_model(name_or_path)
    except NotFound:
        model = None
    if model is not None:
        numbers = [version] if version is not None else [n for n in (model.champion,) if n] + list(
            range(model.latest_version, 0, -1))
        for n in numbers:
            spec = version_spec(objects, registry.get_version(name_or_path, n))
            if spec is not None:
                return spec
    if name_or_path in builtin_spec_names():
        return load_spec(name_or_path)
    registered = sorted(m.name for m in registry.list_models() if m.kind == "model")
    raise SpecError(
        f"no model called {name_or_path!r}: registered models {registered or 'none'}, built-in specs "
        f"{builtin_spec_names()}; or pass the path of a spec file (.yaml)")


def catalog_specs(registry: Any, objects: ObjectStore) -> dict[str, ModelSpec]:
    """Model name -> its spec, for every built-in spec and every registered model that kept one
    (a registered model's own spec wins over a built-in of the same name): the views of the
    results catalog come from these."""
    specs = {name: load_spec(name) for name in builtin_spec_names()}
    for model in registry.list_models():
        if model.kind != "model":
            continue
        try:
            specs[model.name] = resolve_spec(model.name, registry, objects)
        except SpecError:
            continue
    return specs
