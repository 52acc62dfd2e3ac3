"""Which models a score uses, resolved the same way in every mode.

Two sources: ``MODEL_DIR`` set -> that fixed local artifact dir (the champion only, followed
by its manifest's stamp); otherwise MLflow's Model Registry (``registry.store``): the
``champion`` alias serves and ``challenger``, if set, is shadow-scored. A resolved registry
version is downloaded once into an immutable cache dir, then loaded by ``Predictor.load``
with its checksum and contract checks, and named ``<model>/<version>``.

Batch pins its models once (``pin_models``); the API and the stream follow the aliases with a
``ModelWatcher``, whose checks (MLflow queries, downloads, loads) run off the scoring path.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Protocol

from feast import FeatureService

from core.cli import UserError
from core.predictor import MANIFEST_FILE, Models, Predictor
from core.settings import Settings
from registry.store import CHALLENGER, CHAMPION, Registry, version_name

log = logging.getLogger(__name__)

Keys = dict[str, str]  # role (champion, challenger) -> what identifies its artifact


class Source(Protocol):
    def describe(self) -> str: ...
    def resolve(self) -> Keys: ...
    def load(self, key: str) -> Predictor: ...


class LocalSource:
    """``MODEL_DIR``: a champion only, identified by its manifest's mtime and size."""

    def __init__(self, model_dir: Path, service: FeatureService) -> None:
        self.dir = model_dir
        self.service = service

    def describe(self) -> str:
        return str(self.dir)

    def resolve(self) -> Keys:
        try:
            st = (self.dir / MANIFEST_FILE).stat()
        except FileNotFoundError:  # none yet, or training is swapping the dir in
            return {}
        return {CHAMPION: f"{st.st_mtime_ns}:{st.st_size}"}

    def load(self, key: str) -> Predictor:
        return Predictor.load(self.dir, self.service)


class RegistrySource:
    """MLflow's registry: the aliases' versions, each loaded from its cached download."""

    def __init__(self, registry: Registry, service: FeatureService) -> None:
        self.registry = registry
        self.service = service

    def describe(self) -> str:
        return self.registry.describe()

    def resolve(self) -> Keys:
        aliases = self.registry.aliases()  # one query for both aliases
        return {role: aliases[role] for role in (CHAMPION, CHALLENGER) if role in aliases}

    def load(self, key: str) -> Predictor:
        model_dir = self.registry.fetch(key)
        return Predictor.load(model_dir, self.service, version_name(self.registry.name, key))


def open_source(settings: Settings, service: FeatureService) -> Source:
    if settings.model_dir is not None:
        return LocalSource(settings.model_dir, service)
    return RegistrySource(Registry(settings), service)


def _no_champion(source: Source) -> UserError:
    return UserError(
        f"no champion model in {source.describe()}: train with `python -m training`"
        " or promote a version with `fraud-models promote VERSION`"
    )


def pin_models(settings: Settings, service: FeatureService) -> Models:
    """Resolve champion (and challenger, if the alias is set) once and load them: batch,
    parity, tests. A bad champion raises; a challenger that fails to load is logged and left
    out."""
    source = open_source(settings, service)
    keys = source.resolve()
    if CHAMPION not in keys:
        raise _no_champion(source)
    champion = source.load(keys[CHAMPION])
    challenger = None
    if CHALLENGER in keys:
        try:
            challenger = source.load(keys[CHALLENGER])
        except Exception as exc:  # refused or not downloadable: shadowing never blocks scoring
            log.warning("challenger %s not used, scoring without it: %s", keys[CHALLENGER], exc)
    return Models(champion, challenger)


def load_version(settings: Settings, service: FeatureService, version: str) -> Predictor:
    """The predictor a reported version name (``fraud-detector/3``) stands for."""
    source = open_source(settings, service)
    if isinstance(source, RegistrySource):
        name, _, number = version.rpartition("/")
        if name != source.registry.name:
            raise UserError(f"{version} is not a version of {source.describe()}")
        return source.load(number)
    predictor = source.load("")
    if predictor.version != version:
        raise UserError(f"{source.describe()} holds {predictor.version}, not {version}")
    return predictor


class ModelWatcher:
    """Follows the aliases for the API and the stream, off the hot path.

    Readers take ``current`` once per request or micro-batch; a check replaces it with a new
    ``Models`` in one assignment. A refused candidate (checksum, contract) keeps the role's
    previous model and sets ``refused``; it is not retried until its alias moves or a forced
    check. A failed download or registry read also keeps the previous model, and is retried.
    """

    def __init__(
        self, settings: Settings, service: FeatureService, source: Source | None = None
    ) -> None:
        self._source = source or open_source(settings, service)
        self._interval = settings.model_reload_interval_s
        self._lock = threading.Lock()  # the thread's checks and /admin/reload's
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refusals: dict[str, str] = {}  # key -> why it was refused
        self._noted = ""
        self.refused: str | None = None
        keys = self._source.resolve()
        if CHAMPION not in keys:
            raise _no_champion(self._source)
        self._loaded: Keys = {CHAMPION: keys[CHAMPION]}
        champion = self._source.load(keys[CHAMPION])  # a bad champion: no start
        # A bad challenger is refused as later ones are: the champion serves alone.
        self.current = Models(champion, self._role(CHALLENGER, keys, None, force=False))
        self.refused = self._refusal(keys)

    def check(self, force: bool = False) -> bool:
        """Re-resolve the aliases and load what changed; True if ``current`` was replaced."""
        with self._lock:
            try:
                keys = self._source.resolve()
            except Exception as exc:  # a registry outage: keep serving what we have
                self._note(f"cannot resolve models in {self._source.describe()}: {exc}")
                return False
            if CHAMPION not in keys:  # alias deleted, or a local dir mid-swap: keep serving
                keys[CHAMPION] = self._loaded[CHAMPION]
                if isinstance(self._source, RegistrySource):
                    self._note(f"no champion in {self._source.describe()}; keeping the last one")
            else:
                self._noted = ""  # resolved fine: the next problem is news again
            if keys == self._loaded and not force:
                self.refused = None  # e.g. rolled back from a refused candidate
                return False
            old = self.current
            champion = self._role(CHAMPION, keys, old.champion, force)
            challenger = self._role(CHALLENGER, keys, old.challenger, force)
            self.refused = self._refusal(keys)
            if champion is old.champion and challenger is old.challenger:
                return False
            assert champion is not None  # resolve() always yields a champion key here
            self.current = Models(champion, challenger)
            log.info("models: %s -> %s", _describe(old), _describe(self.current))
            return True

    def _role(
        self, role: str, keys: Keys, previous: Predictor | None, force: bool
    ) -> Predictor | None:
        key = keys.get(role)
        if key is None:
            self._loaded.pop(role, None)
            return None
        if key == self._loaded.get(role) and not force:
            return previous
        if key in self._refusals and not force:
            return previous
        try:
            fresh = self._source.load(key)
        except UserError as exc:  # checksum or contract: this artifact never loads
            self._refusals[key] = f"{role} {key} refused: {exc}"
            log.warning("%s; %s keeps serving", self._refusals[key], _name(previous))
            return previous
        except Exception as exc:  # a failed download or registry read: retried next check
            self._note(f"{role} {key} not loaded yet ({exc}); {_name(previous)} keeps serving")
            return previous
        self._refusals.pop(key, None)
        self._loaded[role] = key
        return fresh

    def _refusal(self, keys: Keys) -> str | None:
        """Why an alias points at a version that is not loaded, if it was refused."""
        pending = [k for r, k in keys.items() if self._loaded.get(r) != k]
        return next((self._refusals[k] for k in pending if k in self._refusals), None)

    def _note(self, message: str) -> None:
        """A warning once per distinct problem, not once per interval."""
        if message != self._noted:
            log.warning("%s", message)
            self._noted = message

    def start(self) -> None:
        """A daemon thread calling ``check()`` every ``MODEL_RELOAD_INTERVAL_S``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception:  # the thread must outlive any surprise; the old models serve
                log.exception("model check failed")


def _name(predictor: Predictor | None) -> str:
    return predictor.version if predictor is not None else "no model"


def _describe(models: Models) -> str:
    shadow = f" (challenger {models.challenger.version})" if models.challenger else ""
    return f"champion {models.champion.version}{shadow}"
