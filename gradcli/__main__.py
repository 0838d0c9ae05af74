"""``python -m gradcli``: the same as the ``gradcli`` command."""
from ._entry import main

if __name__ == "__main__":
    main()
