import sys, statistics as st, collections
# lines in order: for each round, for each rate, variants in order; pair each variant with rmqc of same round+rate
lines=[l.split() for l in open(sys.argv[1]) if l.startswith('e2e_')]
ref=sys.argv[2] if len(sys.argv)>2 else 'rmqc'
groups=[]; cur=[]; 
# group consecutive lines with same rate
for p in lines:
    if cur and cur[-1][0]!=p[0]: groups.append(cur); cur=[]
    cur.append(p)
if cur: groups.append(cur)
r50=collections.defaultdict(list); r99=collections.defaultdict(list); cpu=collections.defaultdict(list)
for g in groups:
    d={p[1]:p for p in g}
    if ref not in d: continue
    for k,p in d.items():
        if k==ref: continue
        r50[(p[0],k)].append(float(d[ref][2])/float(p[2]))
        r99[(p[0],k)].append(float(d[ref][3])/float(p[3]))
        cpu[(p[0],k)].append(float(p[4])/float(d[ref][4]))
for k in sorted(r50):
    a=r50[k]; b=r99[k]
    print(k[0], '%-6s'%k[1], 'n=%d'%len(a), '%s/x p50 %.2f (%.2f-%.2f)'%(ref,st.median(a),min(a),max(a)), 'p99 %.2f (%.2f-%.2f)'%(st.median(b),min(b),max(b)), 'cpu x/%s %.2f'%(ref,st.median(cpu[k])))
