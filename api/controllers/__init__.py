"""HTTP controllers, one module per resource; thin handlers over `api.service.Service`."""

from api.controllers.assignments import AssignmentController
from api.controllers.campaigns import CampaignController
from api.controllers.health import health
from api.controllers.metrics import metrics
from api.controllers.reads import ReadController
from api.controllers.whoami import whoami

CONTROLLERS = [
    CampaignController,
    AssignmentController,
    ReadController,
    health,
    metrics,
    whoami,
]

__all__ = ["CONTROLLERS"]
