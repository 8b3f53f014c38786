from fastnet.cli import main

raise SystemExit(main())
