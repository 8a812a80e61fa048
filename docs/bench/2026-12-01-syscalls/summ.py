import sys, statistics as st, collections
rows=collections.defaultdict(list)
for line in open(sys.argv[1]):
    p=line.split()
    if len(p)<6 or not p[0].startswith('e2e_'): continue
    rows[(p[0],p[1])].append((float(p[2]),float(p[3]),float(p[4])))
for k in sorted(rows):
    v=rows[k]
    print(k[0],'%-5s'%k[1],'n=%d'%len(v),'p50 med %.1f'%st.median(x[0] for x in v),'p99 med %.1f'%st.median(x[1] for x in v),'cpu med %.1f'%st.median(x[2] for x in v))
