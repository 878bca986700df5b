"""TrainingDataManager: register, validate, version, list and delete datasets.

Registering reads a file in any supported format, works out (or takes) its
shape and column mapping, checks every row, and only then stores the content
as an immutable, content-addressed version (see `versions`). A dataset that
fails the checks is not registered and nothing is written. `name@version`
pins a version; a bare name means the latest.
"""

from __future__ import annotations

import builtins
import functools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from flextrain.data.bundled import bundled_path
from flextrain.data.checks import DataReport, check_records
from flextrain.data.formats import (
    SourceFormat,
    detect_source_format,
    read_source,
    unreadable_message,
)
from flextrain.data.registry import (
    BUNDLED,
    DatasetFormatError,
    DatasetInfo,
    DatasetNotFoundError,
    DatasetRecord,
    DatasetRegistry,
    not_registered,
)
from flextrain.data.shapes import (
    CANONICAL_FIELDS,
    ColumnMap,
    Shape,
    detect_shape,
    resolve_columns,
    to_canonical,
)
from flextrain.data.versions import (
    DatasetVersionRecord,
    canonical_bytes,
    content_version,
    dataset_folder,
    read_canonical,
    write_version,
)
from flextrain.db import as_utc
from flextrain.errors import ConflictError, given

VALIDATION_FIX = (
    "correct the rows listed (`flextrain datasets validate FILE` lists every problem in "
    "one pass), then register the file again."
)


class DatasetValidationError(DatasetFormatError):
    """The data has errors; carries the full report (every row and field), and shows
    the errors and unreadable lines in file order, the first SHOWN_ISSUES of them."""

    code = "dataset_invalid"
    field = "file"

    def __init__(self, report: DataReport, source: str) -> None:
        self.report = report
        errors = report.shown_issues()
        errors = [i for i in errors if i.severity == "error"]
        shown = "\n".join(f"  - {issue}" for issue in errors)
        more = report.error_count - len(errors)
        tail = f"\n  … and {more} more" if more > 0 else ""
        noun = "error" if report.error_count == 1 else "errors"
        super().__init__(
            f"'{source}' was not registered: {report.error_count} {noun} in the data "
            f"({report.shape} shape):\n{shown}{tail}\nFix: {VALIDATION_FIX}",
            field="file",
            fix=VALIDATION_FIX,
        )


class DatasetInUseError(ConflictError, DatasetFormatError):
    """A version that a job trained on cannot be deleted without force."""

    code = "dataset_in_use"
    field = "force"


@dataclass(frozen=True)
class DatasetVersionInfo:
    dataset_id: str
    version: str
    shape: str
    source_format: str
    source_name: str
    path: Path
    columns: list[str]
    mapping: dict[str, str | None]
    num_rows: int
    size_bytes: int
    owner: str | None
    created_at: datetime
    # The checks' report, when this came from `add` (its warnings: duplicates, mixed
    # label kinds ...); not stored, so None for a version read back.
    report: DataReport | None = field(default=None, compare=False, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.dataset_id}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "report"}
        data["path"] = str(self.path)
        data["created_at"] = self.created_at.isoformat()
        return data

    @classmethod
    def from_record(cls, r: DatasetVersionRecord) -> DatasetVersionInfo:
        created = as_utc(r.created_at)
        assert created is not None
        return cls(
            dataset_id=r.dataset_id,
            version=r.version,
            shape=r.shape,
            source_format=r.source_format,
            source_name=r.source_name,
            path=Path(r.path),
            columns=json.loads(r.columns_json),
            mapping=json.loads(r.mapping_json),
            num_rows=r.num_rows,
            size_bytes=r.size_bytes,
            owner=r.owner,
            created_at=created,
        )


def split_ref(ref: str) -> tuple[str, str | None]:
    """'name@version' -> (name, version); a bare name -> (name, None)."""
    name, sep, version = ref.rpartition("@")
    if not sep or not name or not version:
        return ref, None
    return name, version


def load_and_check(
    path: Path,
    *,
    format: SourceFormat | None = None,
    shape: Shape | None = None,
    columns: ColumnMap | None = None,
    token_length: Callable[[str], int] | None = None,
    max_length: int | None = None,
) -> tuple[list[dict[str, Any]], DataReport, SourceFormat, ColumnMap]:
    """Read, shape and check a file: (records, report, source format, resolved columns).

    Lines that are not records (bad JSON, a CSV row with extra fields) are errors in
    the report, listed in file order with the rows' errors; a file with no readable
    record at all is a DatasetFormatError that lists every such line. Errors that stop
    the reading name the `file` as the field at fault.
    """
    if not path.exists():
        raise DatasetNotFoundError(
            f"Dataset file '{path}' does not exist. Fix: check the path.",
            field="file",
            fix="check the path.",
        )
    try:
        fmt = format or detect_source_format(path)
        source = read_source(path, fmt)
        records = source.records
        unreadable = [(u.line, u.message) for u in source.unreadable]
        if not records:
            raise DatasetFormatError(
                unreadable_message(path.name, source.unreadable)
                + "\nNothing in it could be read as a record.",
                fix="one JSON object (or CSV row) per line; correct the lines listed.",
            )
        mapping = columns or ColumnMap()
        try:
            found_shape = shape or detect_shape(records, mapping)
            resolved = resolve_columns(records, found_shape, mapping)
        except DatasetFormatError as exc:
            if not source.unreadable:
                raise
            # The shape error comes first; the unreadable lines are still worth a list.
            raise DatasetFormatError(
                f"{exc}\nAlso, {unreadable_message(path.name, source.unreadable)}",
                field=given(exc, "field"),
                fix=exc.fix or str(exc).partition("Fix: ")[2] or None,
            ) from None
    except DatasetFormatError as exc:
        if given(exc, "field") is None:  # not the class's "dataset_id": the file is at fault
            exc.field = "file"
        raise
    report = check_records(
        records,
        found_shape,
        resolved,
        token_length=token_length,
        max_length=max_length,
        lines=source.lines,
        unreadable=unreadable,
    )
    return records, report, fmt, resolved


@functools.cache
def bundled_shape_and_version(dataset_id: str) -> tuple[str, str]:
    """A bundled dataset's shape and the version it would get if registered (the
    SHA-256 of its canonical content), for listing it like a registered one."""
    filename, _, given_shape = BUNDLED[dataset_id]
    records = read_source(bundled_path(filename)).records
    found = cast(Shape, given_shape) if given_shape else detect_shape(records)
    resolved = resolve_columns(records, found)
    content = canonical_bytes(to_canonical(r, found, resolved) for r in records)
    return found, content_version(content)


def info_from_version(v: DatasetVersionInfo, description: str = "") -> DatasetInfo:
    """What training and the checks need to know, from a stored canonical version."""
    labels: list[str] = []
    if v.shape == "classification":
        labels = sorted({str(r["label"]) for r in read_canonical(v.path)})
    return DatasetInfo(
        dataset_id=v.dataset_id,
        path=v.path,
        format="jsonl",
        num_rows=v.num_rows,
        columns=list(CANONICAL_FIELDS[v.shape]),  # type: ignore[index]
        text_column="text" if v.shape in ("text", "classification") else None,
        label_column="label" if v.shape == "classification" else None,
        labels=labels,
        description=description,
        version=v.version,
        shape=v.shape,
        owner=v.owner,
    )


class TrainingDataManager:
    """Datasets and their versions, stored under `root` and recorded in the database."""

    def __init__(self, sessions: sessionmaker[Any], root: Path) -> None:
        self._sessions = sessions
        self.root = root
        # Bundled demos, records from before versions and plain file paths are read
        # as they are: the unversioned registry already does that.
        self._unversioned = DatasetRegistry(sessions)

    # -- checking ----------------------------------------------------------------------
    def validate(
        self,
        path: str | Path,
        *,
        format: SourceFormat | None = None,
        shape: Shape | None = None,
        columns: ColumnMap | None = None,
        token_length: Callable[[str], int] | None = None,
        max_length: int | None = None,
    ) -> DataReport:
        """Every problem of a file, without registering anything."""
        _, report, _, _ = load_and_check(
            Path(path).expanduser(),
            format=format,
            shape=shape,
            columns=columns,
            token_length=token_length,
            max_length=max_length,
        )
        return report

    # -- registering -------------------------------------------------------------------
    def add(
        self,
        path: str | Path,
        *,
        name: str,
        format: SourceFormat | None = None,
        shape: Shape | None = None,
        columns: ColumnMap | None = None,
        description: str = "",
        owner: str | None = None,
        shared: bool | None = None,
    ) -> DatasetVersionInfo:
        """Check the file and store its content as a version of `name` (the latest).

        Identical content is the same version (nothing new is written); changed
        content is a new version. Errors in the data raise DatasetValidationError
        before anything is stored.
        """
        name = _check_name(name, description)
        source = Path(path).expanduser()
        records, report, fmt, resolved = load_and_check(
            source, format=format, shape=shape, columns=columns
        )
        if not report.ok:
            raise DatasetValidationError(report, source.name)
        canonical = [to_canonical(r, report.shape, resolved) for r in records]
        content = canonical_bytes(canonical)
        version = content_version(content)
        mapping = {k: v for k, v in asdict(resolved).items() if v is not None}
        folder = dataset_folder(self.root, name) / version
        stored = write_version(
            folder,
            content,
            {"dataset_id": name, "version": version, "shape": report.shape, "mapping": mapping},
        )
        with self._sessions.begin() as session:
            dataset = session.get(DatasetRecord, name)
            if dataset is None:
                dataset = DatasetRecord(
                    name=name, path=str(stored), format="jsonl", description=description
                )
                dataset.owner = owner
                dataset.shared = owner is None if shared is None else shared
                session.add(dataset)
            elif shared is not None:
                dataset.shared = shared
            dataset.path, dataset.format, dataset.latest_version = str(stored), "jsonl", version
            if description:
                dataset.description = description
            existing = session.scalar(
                select(DatasetVersionRecord).where(
                    DatasetVersionRecord.dataset_id == name,
                    DatasetVersionRecord.version == version,
                )
            )
            if existing is None:
                existing = DatasetVersionRecord(
                    dataset_id=name,
                    version=version,
                    shape=report.shape,
                    source_format=fmt,
                    source_name=source.name[:500],
                    path=str(stored),
                    columns_json=json.dumps(report.columns),
                    mapping_json=json.dumps(mapping),
                    num_rows=len(canonical),
                    size_bytes=len(content),
                    owner=owner,
                )
                session.add(existing)
                session.flush()
            return replace(DatasetVersionInfo.from_record(existing), report=report)

    def register(
        self,
        name: str,
        path: str | Path,
        description: str = "",
        *,
        format: SourceFormat | None = None,
        shape: Shape | None = None,
        columns: ColumnMap | None = None,
        owner: str | None = None,
    ) -> DatasetInfo:
        """`add`, returning what training sees (the seed-era signature, kept)."""
        version = self.add(
            path,
            name=name,
            format=format,
            shape=shape,
            columns=columns,
            description=description,
            owner=owner,
        )
        return info_from_version(version, description)

    # -- reading -----------------------------------------------------------------------
    def get(self, ref: str) -> DatasetInfo:
        """A bundled demo, `name` (latest version), `name@version`, or a file path."""
        name, pinned = split_ref(ref)
        if name in BUNDLED and pinned is not None:
            # The version `describe` shows for a demo pins it like a registered one.
            _, version_hash = bundled_shape_and_version(name)
            if not version_hash.startswith(pinned):
                raise DatasetNotFoundError(
                    f"Bundled dataset '{name}' has no version '{pinned}'; it has one, "
                    f"{version_hash[:12]}. Fix: use '{name}' or '{name}@{version_hash[:12]}'.",
                    fix=f"use '{name}' or '{name}@{version_hash[:12]}'.",
                )
            return self._unversioned.get(name)
        version = None if ref in BUNDLED else self.version(ref)
        if version is None:
            return self._unversioned.get(ref)
        if not version.path.is_file():
            # Checked here, where every job is validated on creating and starting it:
            # the worker would only find out after the queue, with a bare OSError.
            raise DatasetNotFoundError(
                f"Dataset '{version.dataset_id}' version {version.version[:12]}: its stored "
                f"copy {version.path} is missing (deleted from the flextrain home). Fix: "
                f"register the file again (`flextrain datasets add FILE --name "
                f"{version.dataset_id}`, or upload it again); the same content gets the same "
                "version, and jobs on it can then start or resume."
            )
        with self._sessions() as session:
            record = session.get(DatasetRecord, version.dataset_id)
            description = record.description if record is not None else ""
        return info_from_version(version, description)

    def describe(self, ref: str) -> DatasetInfo:
        """`get`, for showing: a bundled demo also gets the shape and version it would
        have if registered (training reads it as it is, unversioned)."""
        info = self.get(ref)
        name, _ = split_ref(ref)
        if name in BUNDLED:
            shape, version = bundled_shape_and_version(name)
            info = replace(info, shape=shape, version=version)
        return info

    def names(self) -> builtins.list[str]:
        return self._unversioned.names()

    def access(self, name: str) -> tuple[str | None, bool] | None:
        """(owner, shared) of a registered dataset; bundled ones are (None, True);
        None when `name` is neither."""
        if name in BUNDLED:
            return None, True
        with self._sessions() as session:
            record = session.get(DatasetRecord, name)
            return (record.owner, record.shared) if record is not None else None

    def list(self) -> builtins.list[DatasetInfo]:
        """The seed's `list`: every readable dataset (latest versions)."""
        return self.list_datasets()

    def list_datasets(self) -> builtins.list[DatasetInfo]:
        """Every dataset (latest versions) that can be read; broken ones are left out."""
        out = []
        for name in self.names():
            try:
                out.append(self.describe(name))
            except (DatasetNotFoundError, DatasetFormatError):
                continue
        return out

    def describe_all(self) -> builtins.list[dict[str, Any]]:
        out = []
        for name in self.names():
            try:
                out.append(self.describe(name).to_dict())
            except (DatasetNotFoundError, DatasetFormatError) as exc:
                out.append({"dataset_id": name, "error": str(exc)})
        return out

    def versions(self, name: str) -> builtins.list[DatasetVersionInfo]:
        """Every version of `name`, oldest first."""
        query = (
            select(DatasetVersionRecord)
            .where(DatasetVersionRecord.dataset_id == name)
            .order_by(DatasetVersionRecord.id)
        )
        with self._sessions() as session:
            return [DatasetVersionInfo.from_record(r) for r in session.scalars(query)]

    def version(self, ref: str) -> DatasetVersionInfo | None:
        """The version `ref` names (latest for a bare name), or None if unversioned."""
        name, version = split_ref(ref)
        with self._sessions() as session:
            dataset = session.get(DatasetRecord, name)
            registered = dataset is not None
            latest = dataset.latest_version if dataset is not None else None
        if not registered:
            if version is not None:
                raise not_registered(name, self.names())
            return None
        version = version or latest
        if version is None:
            return None
        query = select(DatasetVersionRecord).where(
            DatasetVersionRecord.dataset_id == name,
            DatasetVersionRecord.version.startswith(version),
        )
        with self._sessions() as session:
            found = list(session.scalars(query))
        if len(found) != 1:
            known = ", ".join(v.version[:12] for v in self.versions(name)) or "none"
            raise DatasetNotFoundError(
                f"Dataset '{name}' has no single version '{version}'. Fix: use one of: {known}.",
                fix=f"use one of: {known}.",
            )
        return DatasetVersionInfo.from_record(found[0])

    # -- deleting ----------------------------------------------------------------------
    def delete(
        self,
        name: str,
        version: str | None = None,
        *,
        used_by: Callable[[str, str], builtins.list[str]] = lambda _n, _v: [],
        force: bool = False,
    ) -> builtins.list[str]:
        """Delete one version (or every version) of `name`; returns the versions deleted.

        A version a job trained on is kept unless `force`: the job's record
        would otherwise name data that no longer exists.
        """
        if name in BUNDLED:
            raise DatasetFormatError(
                f"'{name}' is bundled with flextrain and cannot be deleted.",
                fix="delete a dataset you registered; the bundled ones stay.",
            )
        targets = [self.version(f"{name}@{version}")] if version else self.versions(name)
        chosen = [v for v in targets if v is not None]
        if not chosen and version is None and not self._exists(name):
            raise not_registered(name, self.names())
        for v in chosen:
            jobs = used_by(name, v.version)
            if jobs and not force:
                raise DatasetInUseError(
                    f"Version {v.version[:12]} of '{name}' was used by job(s) "
                    f"{', '.join(jobs[:5])}. Fix: keep it, or delete with --force."
                )
        with self._sessions.begin() as session:
            for v in chosen:
                record = session.scalar(
                    select(DatasetVersionRecord).where(
                        DatasetVersionRecord.dataset_id == name,
                        DatasetVersionRecord.version == v.version,
                    )
                )
                if record is not None:
                    session.delete(record)
            session.flush()
            remaining = session.scalars(
                select(DatasetVersionRecord)
                .where(DatasetVersionRecord.dataset_id == name)
                .order_by(DatasetVersionRecord.id)
            ).all()
            dataset = session.get(DatasetRecord, name)
            if dataset is not None:
                if remaining:
                    dataset.latest_version, dataset.path = remaining[-1].version, remaining[-1].path
                else:
                    session.delete(dataset)
        for v in chosen:
            _remove_folder(v.path.parent)
        return [v.version for v in chosen]

    def _exists(self, name: str) -> bool:
        with self._sessions() as session:
            return session.get(DatasetRecord, name) is not None


def _check_name(name: str, description: str) -> str:
    name = name.strip()
    if not name:
        raise ValueError("dataset name is empty. Fix: give a short name.")
    if name in BUNDLED:
        raise ValueError(f"'{name}' is a bundled dataset. Fix: choose another name.")
    if "@" in name:
        raise ValueError("dataset name contains '@', which pins versions. Fix: drop the '@'.")
    parts = name.split("/")
    if (
        name.startswith(("/", "~"))
        or "\\" in name
        or "\x00" in name
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise ValueError(
            f"dataset name {name!r} looks like a path. Fix: use letters, digits, '_', '.', "
            "'-' and '/' between words, e.g. 'team/reviews'."
        )
    if len(name) > 200:
        raise ValueError("dataset name is over 200 characters. Fix: use a shorter name.")
    if len(description) > 1000:
        raise ValueError("description is over 1000 characters. Fix: shorten it.")
    return name


def _remove_folder(folder: Path) -> None:
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
