from kohya_lite.cli import main

raise SystemExit(main())
