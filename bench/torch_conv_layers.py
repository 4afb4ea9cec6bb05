"""Per-layer GFLOP/s of PyTorch's CPU convolutions (forward, grad-input, grad-weight) on the 20
convolutions of ResNet-18 with the CIFAR stem at batch 64, 2 threads, median of 5: the
per-layer counterpart of `cargo run --release --example conv_ab` (bench/README.md).

    bench/.venv/bin/python bench/torch_conv_layers.py
"""
import torch, time, json, sys
torch.set_num_threads(2)
n=64
shapes=[(3,64,32,3,1,1)]
for ci,co,side in [(64,64,32),(64,128,32),(128,256,16),(256,512,8)]:
    if ci!=co: shapes += [(ci,co,side,3,2,1),(co,co,side//2,3,1,1),(ci,co,side,1,2,0),(co,co,side//2,3,1,1),(co,co,side//2,3,1,1)]
    else: shapes += [(ci,co,side,3,1,1)]*4
def med(f, reps=5):
    f(); ts=[]
    for _ in range(reps):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    ts.sort(); return ts[len(ts)//2]
tot=[0,0,0]
for (c,co,side,k,s,p) in shapes:
    x=torch.randn(n,c,side,side); w=torch.randn(co,c,k,k)
    y=torch.nn.functional.conv2d(x,w,stride=s,padding=p); gy=torch.randn_like(y)
    fl=2*n*co*y.shape[2]*y.shape[3]*c*k*k/1e9
    f=med(lambda: torch.nn.functional.conv2d(x,w,stride=s,padding=p))
    gi=med(lambda: torch.ops.aten.convolution_backward(gy,x,w,None,[s,s],[p,p],[1,1],False,[0,0],1,[True,False,False]))
    gw=med(lambda: torch.ops.aten.convolution_backward(gy,x,w,None,[s,s],[p,p],[1,1],False,[0,0],1,[False,True,False]))
    tot[0]+=2*f; tot[1]+=gi; tot[2]+=gw
    print(f"{c}->{co} {k}x{k} s{s} {side}px  fwd {fl/f:6.1f}  gi {fl/gi:6.1f}  gw {fl/gw:6.1f} GFLOP/s")
print("totals fwd(x2) gi gw", [round(t,3) for t in tot])
