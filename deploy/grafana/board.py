"""The pieces the dashboards are made of: a `Board` that lays panels out on Grafana's
24-column grid and writes the dashboard JSON, and the PromQL the panels share."""

from __future__ import annotations

from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "sam2fleet-prometheus"}
# The worker variable as a label selector, for series that carry only `worker`.
BY_WORKER = '{worker=~"$worker"}'
# Grafana's window for rate() and increase(): a few scrape intervals, whatever the zoom.
RATE_WINDOW = "$__rate_interval"
PERCENTILES = (0.5, 0.95, 0.99)


def quantile(level: float, histogram: str, selector: str, by: str) -> str:
    """PromQL for the `level` quantile (0.95 for p95) of a histogram's observations in
    the rate window, one series per value of the `by` labels."""
    buckets = f"rate({histogram}_bucket{{{selector}}}[{RATE_WINDOW}])"
    return f"histogram_quantile({level}, sum by (le, {by}) ({buckets}))"


def summed_rate(counter: str, selector: str = "", by: str = "") -> str:
    """PromQL: a counter's per-second rate in the rate window, summed (per `by` labels)."""
    series = f"{counter}{{{selector}}}" if selector else counter
    total = f"sum by ({by}) " if by else "sum"
    return f"{total}(rate({series}[{RATE_WINDOW}]))"


def percentile(level: float) -> str:
    """0.95 -> "p95", for titles and legends."""
    return f"p{int(level * 100)}"


def target(expr: str, legend: str, ref: str, **extra: Any) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref, **extra}


# Template variables filled from a metric's label values: name -> (metric, label).
QUERY_VARIABLES = {
    "model": ("sam2fleet_worker_up", "model"),
    "worker": ('sam2fleet_worker_up{model=~"$model"}', "worker"),
}


class Board:
    """One dashboard: rows and panels added in reading order, laid out left to right."""

    def __init__(self, uid: str, title: str, description: str, variables: list[str]) -> None:
        self.uid, self.title, self.description, self.variables = uid, title, description, variables
        self.panels: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.y = 0  # where the next panel goes: grid row...
        self.x = 0  # ...and column (of 24)

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "id": len(self.panels) + 1,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            }
        )
        self.y += 1

    def panel(
        self,
        title: str,
        description: str,
        targets: list[tuple[str, str]],
        *,
        kind: str = "timeseries",
        unit: str = "short",
        width: int = 12,
        field: dict[str, Any] | None = None,
        overrides: list[dict[str, Any]] | None = None,
        options: dict[str, Any] | None = None,
        target_fields: dict[str, Any] | None = None,
    ) -> None:
        """A panel of `width` (of 24) columns, on this line if it fits; `targets` are
        (PromQL, legend) pairs."""
        if self.x + width > 24:
            self._newline()
        refs = "ABCDEFGH"
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": kind,
                "title": title,
                "description": description,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": width, "x": self.x, "y": self.y},
                "fieldConfig": {
                    "defaults": {"unit": unit, **(field or {})},
                    "overrides": overrides or [],
                },
                "options": options or {"legend": {"displayMode": "table", "placement": "bottom"}},
                "targets": [
                    target(expr, legend, refs[i], **(target_fields or {}))
                    for i, (expr, legend) in enumerate(targets)
                ],
            }
        )
        self.x += width

    def _newline(self) -> None:
        if self.x:
            self.y += 8
            self.x = 0

    def json(self) -> dict[str, Any]:
        templating = [
            {
                "name": "datasource",
                "type": "datasource",
                "query": "prometheus",
                "current": {"text": "Prometheus", "value": DATASOURCE["uid"]},
                "hide": 0,
            }
        ]
        for name in self.variables:
            if name == "mode":
                templating.append(
                    {
                        "name": "mode",
                        "label": "mode",
                        "type": "custom",
                        "query": "prompt,auto",
                        "includeAll": True,
                        "multi": True,
                        "allValue": ".*",
                        "current": {"text": "All", "value": "$__all"},
                    }
                )
                continue
            metric, label = QUERY_VARIABLES[name]
            templating.append(
                {
                    "name": name,
                    "label": name,
                    "type": "query",
                    "datasource": DATASOURCE,
                    "definition": f"label_values({metric}, {label})",
                    "query": {"query": f"label_values({metric}, {label})", "refId": name},
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                    "sort": 1,
                }
            )
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["sam2fleet"],
            "timezone": "browser",
            "schemaVersion": 39,
            "version": 1,
            "editable": False,
            "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": templating},
            "annotations": {
                "list": [
                    {
                        "builtIn": 1,
                        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                        "enable": True,
                        "hide": True,
                        "iconColor": "rgba(0, 211, 255, 1)",
                        "name": "Annotations & Alerts",
                        "type": "dashboard",
                    },
                    *self.annotations,
                ]
            },
            "panels": self.panels,
        }
