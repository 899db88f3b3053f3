"""Imports every command module so that each registers itself on ``app``."""
from . import doctor, faces  # noqa: F401,E402
from .main import app  # noqa: E402
from .profiles import profiles_app  # noqa: E402

app.add_typer(profiles_app, name="profiles")
from .models import models_app  # noqa: E402

app.add_typer(models_app, name="models")
from . import restore  # noqa: F401,E402
from . import enroll  # noqa: F401,E402
from . import evaluate  # noqa: F401,E402
from . import adapt  # noqa: F401,E402
from .adapt import adapted_app  # noqa: E402

app.add_typer(adapted_app, name="adapted")
