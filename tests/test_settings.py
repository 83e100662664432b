from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import Settings


def test_defaults(tmp_path: Path) -> None:
    s = Settings.load(data_dir=tmp_path, environ={})
    assert s.submission_port == 5870
    assert s.submissions_port == 4650
    assert s.relay_port == 2525
    assert s.imap_port == 1143
    assert s.imaps_port == 9930
    assert s.web_port == 8443
    assert s.metrics_port == 9100
    assert s.effective_database_url == f"sqlite:///{(tmp_path / 'mss.db').resolve()}"


def test_precedence_toml_env_overrides(tmp_path: Path) -> None:
    (tmp_path / "mss.toml").write_text('domain = "toml.test"\nimap_port = 2000\nweb_port = 3000\n')
    env = {"MSS_IMAP_PORT": "2001", "MSS_DATA_DIR": str(tmp_path)}
    s = Settings.load(environ=env, web_port=3001)
    assert s.data_dir == tmp_path
    assert s.domain == "toml.test"  # from the file
    assert s.imap_port == 2001  # the environment beats the file
    assert s.web_port == 3001  # an override beats both


def test_bad_values_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MSS_IMAP_PORT"):
        Settings.load(data_dir=tmp_path, environ={"MSS_IMAP_PORT": "abc"})
    with pytest.raises(ConfigError, match="MSS_SECURITY_POLICY"):
        Settings.load(data_dir=tmp_path, environ={"MSS_SECURITY_POLICY": "maybe"})
    with pytest.raises(ConfigError, match="MSS_SMARTHOST"):
        Settings.load(data_dir=tmp_path, environ={"MSS_SMARTHOST": "nohostport"})
    for workers in ("-1", "65"):
        with pytest.raises(ConfigError, match="MSS_QUEUE_WORKERS doit valoir entre 0"):
            Settings.load(data_dir=tmp_path, environ={"MSS_QUEUE_WORKERS": workers})
    (tmp_path / "mss.toml").write_text("colour = 1\n")
    with pytest.raises(ConfigError, match="colour"):
        Settings.load(data_dir=tmp_path, environ={})
    (tmp_path / "mss.toml").write_text("domain = \n")
    with pytest.raises(ConfigError, match="illisible"):
        Settings.load(data_dir=tmp_path, environ={})


def test_settings_are_immutable_and_replace(tmp_path: Path) -> None:
    s = Settings.load(data_dir=tmp_path, environ={})
    with pytest.raises(AttributeError):
        s.domain = "x.test"  # type: ignore[misc]
    t = s.replace(imap_port="1144")
    assert t.imap_port == 1144 and s.imap_port == 1143


def test_secret_is_created_once_private(tmp_path: Path) -> None:
    s = Settings.load(data_dir=tmp_path, environ={})
    first = s.secret()
    assert s.secret() == first and len(first) == 64
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    assert Settings.load(data_dir=tmp_path, environ={"MSS_SECRET_KEY": "k"}).secret() == b"k"
