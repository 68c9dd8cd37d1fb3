"""plugbox.toml on the client: every key validated, every problem named, nothing guessed."""

from pathlib import Path

import pytest

from plugbox_client.config import (
    Config,
    ConfigError,
    find_config,
    load_config,
    parse_config,
    render_config,
    write_config,
)

WHERE = Path("/project/plugbox.toml")

MINIMAL = """
[service]
host = "hello@example.org"
[build]
upload = ["app"]
"""


def parse(text: str) -> Config:
    return parse_config(text, WHERE)


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert caught.value.code == 2
    return str(caught.value)


def test_full_example_is_read_key_by_key():
    config = parse("""
        [service]
        host = "hello@example.org"
        jump = ["bastion.example.org", "admin@inner:2222"]
        home = "/home/hello"
        shared = ["media", "var/log/"]

        [build]
        prepare = ["make dist"]
        version_dir = "dist"
        exclude = ["__pycache__", "*.pyc"]

        [hooks]
        post_upload = ["python3 -m venv env"]
        stop = ["systemctl --user stop hello"]
        start = ["systemctl --user start hello"]
        refresh = ["kill -HUP 1"]
        check = ["true"]
    """)
    assert config.host == "hello@example.org"
    assert config.jump == ("bastion.example.org", "admin@inner:2222")
    assert config.home == "/home/hello"
    assert config.shared == ("media", "var/log")
    assert config.prepare == ("make dist",)
    assert config.version_dir == "dist" and config.upload == ()
    assert config.exclude == ("__pycache__", "*.pyc")
    assert config.hooks["refresh"] == ("kill -HUP 1",)
    assert config.project == Path("/project")
    assert not config.local


def test_minimal_file_has_empty_defaults():
    config = parse(MINIMAL)
    assert (config.jump, config.home, config.shared, config.prepare, config.exclude, config.hooks) == (
        (), None, (), (), (), {})
    assert config.upload == ("app",) and config.version_dir is None


def test_local_host_with_home():
    config = parse('[service]\nhost = "local"\nhome = "/srv/hello"\n[build]\nversion_dir = "."\n')
    assert config.local and config.home == "/srv/hello" and config.version_dir == "."



def test_artifact_is_a_path_in_the_project():
    config = parse('[service]\nhost = "h"\n[build]\nprepare = ["make dist"]\nartifact = "./dist//app.tar.gz"\n')
    assert config.artifact == "dist/app.tar.gz"
    assert (config.upload, config.version_dir, config.prepare) == ((), None, ("make dist",))


def test_without_upload_required_build_may_name_nothing():
    # `plug deploy --artifact FILE` in CI, and every command that uploads nothing,
    # need no more than where the service runs; what [build] says is still checked.
    text = '[service]\nhost = "h"\n[hooks]\nstart = ["run"]\n'
    config = parse_config(text, WHERE, upload_required=False)
    assert (config.upload, config.version_dir, config.artifact) == ((), None, None)
    with pytest.raises(ConfigError, match="none of upload, version_dir and artifact is set"):
        parse_config(text, WHERE)
    with pytest.raises(ConfigError, match="both upload and artifact are set"):
        parse_config(MINIMAL + 'artifact = "a.zip"\n', WHERE, upload_required=False)


def test_local_home_may_be_relative_to_the_file(tmp_path):
    config = parse_config('[service]\nhost = "local"\nhome = "demo-home"\n[build]\nupload = ["a"]\n',
                          tmp_path / "plugbox.toml")
    assert config.home == str(tmp_path / "demo-home")

@pytest.mark.parametrize("text, expected", [
    # unknown keys and tables: typos are never ignored
    (MINIMAL.replace("host =", "hots ="), "[service] hots: unknown key"),
    (MINIMAL + "\n[hooks]\npost-upload = ['x']\n", "[hooks] post-upload: unknown key"),
    (MINIMAL + "\n[build.extra]\n", "[build] extra: unknown key"),
    (MINIMAL + "\n[servce]\nhost = 'x'\n", "[servce]: unknown table"),
    ("verbose = true\n" + MINIMAL, "[verbose]: unknown table"),
    ("service = 'x'\n[build]\nupload = ['a']\n", "[service]: must be a table"),
    # [service] host
    ("[build]\nupload = ['a']\n", "[service] host: missing"),
    (MINIMAL.replace('"hello@example.org"', '"-oProxyCommand=evil"'), "starts with '-'"),
    (MINIMAL.replace('"hello@example.org"', '"hello@example.org:22"'), "is not [user@]host"),
    (MINIMAL.replace('"hello@example.org"', '"two words"'), "is not [user@]host"),
    (MINIMAL.replace('"hello@example.org"', '""'), "[service] host: must be a non-empty string"),
    (MINIMAL.replace('"hello@example.org"', "42"), "[service] host: must be a non-empty string, not int 42"),
    # jump, home
    (MINIMAL.replace("[build]", 'jump = "bastion"\n[build]'), "[service] jump: must be a list"),
    (MINIMAL.replace("[build]", 'jump = ["-J"]\n[build]'), "[service] jump: '-J' is not"),
    (MINIMAL.replace("[build]", 'jump = ["a,b"]\n[build]'), "[service] jump: 'a,b' is not"),
    (MINIMAL.replace("[build]", 'home = "srv/hello"\n[build]'), "[service] home: 'srv/hello' is not an absolute path"),
    (MINIMAL.replace("[build]", 'home = "/srv/\\nx"\n[build]'), "[service] home: '/srv/\\nx' contains a control character"),
    ('[service]\nhost = "local"\n[build]\nupload = ["a"]\n', '[service] home: missing: host = "local" needs it'),
    ('[service]\nhost = "local"\nhome = "/h"\njump = ["b"]\n[build]\nupload = ["a"]\n', "[service] jump: makes no sense"),
    # shared
    (MINIMAL.replace("[build]", 'shared = ["/abs"]\n[build]'), "[service] shared: '/abs' is not a relative path"),
    (MINIMAL.replace("[build]", 'shared = ["../up"]\n[build]'), "[service] shared: '../up' leaves the version directory"),
    (MINIMAL.replace("[build]", 'shared = ["media/*"]\n[build]'), "[service] shared: 'media/*' contains a wildcard"),
    (MINIMAL.replace("[build]", 'shared = ["previous"]\n[build]'), "would replace the version's own previous"),
    (MINIMAL.replace("[build]", 'shared = ["plugbox.toml"]\n[build]'), "would replace the version's own plugbox.toml"),
    (MINIMAL.replace("[build]", 'shared = ["log", "log/"]\n[build]'), "[service] shared: two entries are 'log'"),
    (MINIMAL.replace("[build]", 'shared = ["."]\n[build]'), "[service] shared: '.' names no path"),
    # [build]
    ('[service]\nhost = "h"\n', "[build] upload: none of upload, version_dir and artifact is set"),
    (MINIMAL + 'version_dir = "dist"\n', "[build] upload: both upload and version_dir are set"),
    (MINIMAL + 'artifact = "app.tgz"\n', "[build] upload: both upload and artifact are set"),
    (MINIMAL + 'version_dir = "d"\nartifact = "a.zip"\n', "[build] upload: upload, version_dir and artifact are all set"),
    ('[service]\nhost = "h"\n[build]\nartifact = "/tmp/app.tgz"\n', "[build] artifact: '/tmp/app.tgz' is not a relative path"),
    ('[service]\nhost = "h"\n[build]\nartifact = "../app.tgz"\n', "[build] artifact: '../app.tgz' leaves the project directory"),
    ('[service]\nhost = "h"\n[build]\nartifact = ["app.tgz"]\n', "[build] artifact: must be a non-empty string"),
    ('[service]\nhost = "h"\n[build]\nartifact = "app.tgz"\nexclude = ["*.pyc"]\n',
     "[build] exclude: applies to upload and version_dir, not to an artifact"),
    (MINIMAL.replace('["app"]', "[]"), "[build] upload: is empty"),
    (MINIMAL.replace('["app"]', '"app"'), "[build] upload: must be a list of non-empty strings, not 'app'"),
    (MINIMAL.replace('["app"]', '["app", ""]'), "[build] upload: must be a list of non-empty strings"),
    (MINIMAL.replace('["app"]', '["build/previous"]'), "[build] upload: 'build/previous' would land as the version's own 'previous', which plugbox owns"),
    (MINIMAL.replace('["app"]', '["next"]'), "would land as the version's own 'next', which plugbox owns"),
    (MINIMAL.replace('["app"]', '["a/app", "b/app"]'), "[build] upload: two names are 'app'"),
    (MINIMAL.replace('["app"]', '["."]'), "[build] upload: '.' names no path"),
    (MINIMAL.replace('["app"]', '["/etc"]'), "[build] upload: '/etc' is not a relative path"),
    (MINIMAL.replace('["app"]', '["../plugbox"]'), "[build] upload: '../plugbox' leaves the project directory"),
    (MINIMAL + '[release]\nhost = "elsewhere"\n', "[release] host: 'elsewhere' is not one of the hosts"),
    (MINIMAL + '[release]\nwhen_changed = ["../db"]\n', "[release] when_changed: '../db' leaves the version"),
    (MINIMAL + '[release]\nwhen = ["db"]\n', "[release] when: unknown key"),
    (MINIMAL.replace('["app"]', '["app/../../x"]'), "[build] upload: 'app/../../x' leaves the project directory"),
    ('[service]\nhost = "h"\n[build]\nversion_dir = "../dist"\n', "[build] version_dir: '../dist' leaves"),
    ('[service]\nhost = "h"\n[build]\nversion_dir = ["dist"]\n', "[build] version_dir: must be a non-empty string"),
    ('[service]\nhost = "h"\n[build]\nversion_dir = "/dist"\n', "[build] version_dir: '/dist' is not a relative path"),
    (MINIMAL + 'prepare = "make"\n', "[build] prepare: must be a list of non-empty strings"),
    (MINIMAL + "exclude = [1]\n", "[build] exclude: must be a list of non-empty strings"),
    # [hooks]: only their shape
    (MINIMAL + '[hooks]\nstart = "run"\n', "[hooks] start: must be a list of non-empty strings"),
    (MINIMAL + "[hooks]\ncheck = [true]\n", "[hooks] check: must be a list of non-empty strings"),
    (MINIMAL + '[hooks]\nstop = [["nested"]]\n', "[hooks] stop: must be a list of non-empty strings"),
    # not TOML at all
    ("[service\nhost = 'x'\n", "not valid TOML"),
    (MINIMAL + '[service]\nhost = "again"\n', "not valid TOML"),
])
def test_each_problem_names_the_file_the_key_and_why(text, expected):
    message = refused(text)
    assert message.startswith(f"{WHERE}: ")
    assert expected in message


def test_unknown_key_lists_the_known_ones():
    assert "the keys of [service] are host, hosts, jump, home, shared" in refused(MINIMAL.replace("host", "hots"))


def test_found_upward_from_a_subdirectory(tmp_path):
    (tmp_path / "plugbox.toml").write_text(MINIMAL)
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    assert find_config(deep) == tmp_path / "plugbox.toml"
    config = load_config(cwd=deep)
    assert config.path == tmp_path / "plugbox.toml" and config.project == tmp_path


def test_nearest_file_wins(tmp_path):
    (tmp_path / "plugbox.toml").write_text(MINIMAL)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "plugbox.toml").write_text(MINIMAL.replace("hello@", "other@"))
    assert load_config(cwd=tmp_path / "sub").host == "other@example.org"


def test_missing_everywhere_says_how_to_make_one(tmp_path):
    with pytest.raises(ConfigError, match=r"no plugbox.toml in .* or any directory above it; write one with `plug init`"):
        find_config(tmp_path)


def test_named_file_that_is_missing(tmp_path):
    with pytest.raises(ConfigError, match=r"prod.toml: no such file"):
        load_config(tmp_path / "prod.toml")


def test_named_file_may_have_any_name(tmp_path):
    (tmp_path / "prod.toml").write_text(MINIMAL)
    assert load_config(tmp_path / "prod.toml").project == tmp_path


def test_not_utf8_is_refused(tmp_path):
    (tmp_path / "plugbox.toml").write_bytes(b"[service]\nhost = '\xff'\n")
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(tmp_path / "plugbox.toml")


@pytest.mark.parametrize("kwargs", [
    {},
    {"home": "/srv/hello", "jump": ("bastion",), "shared": ("media",), "prepare": ("make 'dist' \"now\"",),
     "upload": ("app", "requirements.txt"), "exclude": ("*.pyc",)},
    {"version_dir": "dist", "exclude": ()},
])
def test_rendered_file_reads_back_as_given(kwargs):
    text = render_config("hello@example.org", **kwargs)
    config = parse(text)
    assert config.host == "hello@example.org"
    assert config.home == kwargs.get("home")
    assert config.jump == kwargs.get("jump", ())
    assert config.shared == kwargs.get("shared", ())
    assert config.prepare == kwargs.get("prepare", ())
    assert config.upload == kwargs.get("upload", ())
    assert config.version_dir == kwargs.get("version_dir", None if kwargs.get("upload") else ".")
    assert config.exclude == kwargs.get("exclude", (".git", "__pycache__", "*.pyc"))
    assert config.hooks == {}
    assert "# post_upload = " in text and "# stop = " in text


def test_write_refuses_an_invalid_result_and_an_existing_file(tmp_path):
    target = tmp_path / "plugbox.toml"
    with pytest.raises(ConfigError, match="starts with '-'"):
        write_config(target, render_config("-x"))
    assert not target.exists()
    write_config(target, render_config("a"))
    with pytest.raises(Exception, match="exists already; pass --force"):
        write_config(target, render_config("b"))
    assert parse_config(target.read_text(), target).host == "a"
    write_config(target, render_config("b"), force=True)
    assert parse_config(target.read_text(), target).host == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plugbox.toml"]


# -- several hosts and stages ------------------------------------------------------

STAGED = """
[service]
hosts = ["web1", "deploy@web2"]
jump = ["bastion"]
home = "/srv/app"
[stages.staging]
host = "staging"
jump = []
[stages.eu]
hosts = ["eu1", "eu2"]
home = "/srv/eu"
[build]
upload = ["app"]
"""


def test_hosts_and_stages_choose_where_the_service_runs():
    plain = parse(STAGED)
    assert plain.hosts == ("web1", "deploy@web2") and plain.host == "web1" and plain.several
    assert plain.jump == ("bastion",) and plain.home == "/srv/app" and plain.stage is None
    staging = parse_config(STAGED, WHERE, "staging")
    assert (staging.hosts, staging.jump, staging.home, staging.several) == (("staging",), (), "/srv/app", False)
    eu = parse_config(STAGED, WHERE, "eu")
    assert (eu.hosts, eu.jump, eu.home, eu.stage) == (("eu1", "eu2"), ("bastion",), "/srv/eu", "eu")
    assert eu.for_host("eu2").hosts == ("eu2",) and eu.for_host("eu2").host == "eu2"
    assert parse(MINIMAL).hosts == ("hello@example.org",) and not parse(MINIMAL).several


def test_an_unknown_stage_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError) as caught:
        parse_config(STAGED, WHERE, "prod")
    assert str(caught.value) == f"{WHERE}: no stage 'prod'; the stages are staging, eu; nothing was done"
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL, WHERE, "prod")
    assert "has no [stages.NAME] table" in str(caught.value)


def test_a_service_without_host_serves_only_through_its_stages():
    text = STAGED.replace('hosts = ["web1", "deploy@web2"]\n', "", 1)
    assert parse_config(text, WHERE, "eu").hosts == ("eu1", "eu2")
    assert "[service] host: missing" in refused(text)


@pytest.mark.parametrize("text, expected", [
    (MINIMAL.replace('host = "hello@example.org"', 'host = "a"\nhosts = ["b"]'), "[service] host: both host and hosts are set"),
    (MINIMAL.replace('host = "hello@example.org"', "hosts = []"), "[service] hosts: is empty"),
    (MINIMAL.replace('host = "hello@example.org"', 'hosts = ["a", "a"]'), "[service] hosts: two entries are 'a'"),
    (MINIMAL.replace('host = "hello@example.org"', 'hosts = ["a", "-oProxyCommand=x"]'), "starts with '-'"),
    (MINIMAL.replace('host = "hello@example.org"', 'hosts = ["a", "local"]'), "cannot be one of several hosts"),
    (MINIMAL.replace('host = "hello@example.org"', 'hosts = "a"'), "[service] hosts: must be a list"),
    (MINIMAL + "[stages.x]\nshared = ['m']\n", "[stages.x] shared: unknown key"),
    (MINIMAL + "[stages]\nx = 1\n", "[stages.x]: must be a table"),
    (MINIMAL + "[stages.x]\nhost = 'a b'\n", "[stages.x] host: 'a b' is not [user@]host"),
])
def test_each_problem_of_hosts_and_stages_is_named(text, expected):
    assert expected in refused(text)


def test_an_engine_needs_no_host_and_keeps_the_home_as_a_default():
    """Ansible's inventory says where: [service] names no host, and may name a home."""
    text = '[service]\nhome = "/srv/hello"\nshared = ["media"]\n[build]\nupload = ["app"]\n'
    config = parse_config(text, WHERE, engine=True)
    assert config.hosts == () and config.host == "inventory"
    assert config.home == "/srv/hello" and config.shared == ("media",) and config.upload == ("app",)
    assert "[service] host: missing" in refused(text)
    assert parse_config('[build]\nupload = ["app"]\n', WHERE, engine=True).home is None
    with pytest.raises(ConfigError, match=r"\[service\] home: 'srv' is not an absolute path"):
        parse_config('[service]\nhome = "srv"\n[build]\nupload = ["app"]\n', WHERE, engine=True)
