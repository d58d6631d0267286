"""phip: a regional population health information platform (区域全民健康信息平台)."""

__version__ = "0.1.0"
