"""The API's routes, one module per tag.

``create_app`` puts ``secured`` behind the API key when API_KEY is set; ``public`` never is.
"""

from __future__ import annotations

from serving.routes import admin, health, predict, scores

secured = (predict.router, scores.router, admin.router)
public = (health.router,)
