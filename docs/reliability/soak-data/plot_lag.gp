set terminal svg size 1000,760 dynamic noenhanced font "sans,11" background "white"
set linetype 1 lc rgb "#9400d3"
set linetype 2 lc rgb "#009e73"
set linetype 3 lc rgb "#56b4e9"
set linetype 4 lc rgb "#e69f00"
set linetype 5 lc rgb "#d4c400"
set linetype 6 lc rgb "#0072b2"
set linetype 7 lc rgb "#e51e10"
set linetype 8 lc rgb "#000000"
set linetype 9 lc rgb "#8c564b"
set linetype 10 lc rgb "#ff69b4"
set linetype 11 lc rgb "#7f7f7f"
set linetype 12 lc rgb "#17becf"
set linetype cycle 12
set datafile separator "\t"
set datafile missing "NaN"
set grid
set key outside right top vertical font ",10"
set xlabel "minutes since the soak started (the load ends at 30.0)"
set arrow from 30.028, graph 0 to 30.028, graph 1 nohead dt 2 lc "gray"
set output "soak-lag.svg"
f = "soak-data/plot_lag.tsv"
set multiplot layout 2,1 title "Soak: consumer lag and outbox backlog"
set ylabel "orders / events / messages"
set title "backlog: orders without their effect, unpublished events, unacknowledged stream entries"
plot f using 1:2 with lines lw 1.5 title columnhead(2), f using 1:3 with lines lw 1.5 title columnhead(3), f using 1:4 with lines lw 1.5 title columnhead(4), f using 1:5 with lines lw 1.5 title columnhead(5), f using 1:6 with lines lw 1.5 title columnhead(6), f using 1:7 with lines lw 1.5 title columnhead(7)
set title "load: offered 101/s, achieved per 10 s interval"
set ylabel "orders/s"
set yrange [0:*]
set y2label "load average (2 cores)"
set y2tics
set y2range [0:*]
plot f using 1:8 with lines lw 1.5 title "achieved", 101 with lines dt 2 lc "black" title "offered", f using 1:9 axes x1y2 with lines lw 1 lc "gray" title columnhead(9)
unset multiplot
