# The Fabric door (pip install 'plugbox[fabric]'): `fab deploy --message M`,
# `fab rollback --version V` and `fab status` here do what plug's commands do,
# on the hosts of plugbox.toml beside this file.
from plugbox_client.fabric import Service

service = Service()                     # reads plugbox.toml, as plug does
deploy, rollback, status = service.tasks


@service.prepare
def stamp(c):
    """A prepare step in Python: it runs here, before plugbox.toml's prepare lines."""
    c.run("git rev-parse --short HEAD > app/REVISION 2>/dev/null || echo unknown > app/REVISION")
