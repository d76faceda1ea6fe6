"""Administration: config store, REST API and status page, CLI sub-commands.

The CLI, the REST API and the status page perform the same operations
(:mod:`dicom_node.admin.operations`); configuration changes go through
:class:`~dicom_node.admin.configstore.ConfigStore`, which persists them to the
YAML file before the running node uses them.
"""

from dicom_node.admin.configstore import ConfigStore, NotFound

__all__ = ["ConfigStore", "NotFound"]
