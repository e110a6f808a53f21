module codehub/bench/wsbench

go 1.26
