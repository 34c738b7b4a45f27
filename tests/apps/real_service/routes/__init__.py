"""The API routers, one module per resource as in the template's ``api/routes``."""

from fastapi import APIRouter

from . import items, login, users, utils

api_router = APIRouter()
api_router.include_router(login.router)
api_router.include_router(users.router)
api_router.include_router(items.router)
api_router.include_router(utils.router)
