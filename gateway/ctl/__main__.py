from gateway.ctl import main

main()
