/* Can a batch-1 step hide the input projection under its W_hh stream?
 * One core: mode 0 a GEMV over W_hh packed [blk][K][4 gates][16] (4 MB by
 * default: from L3), walked forwards and backwards on alternate steps; 1 a
 * step's share of a 16-step projection (16 rows x 16 columns per panel);
 * 2 both, one after the other; 3 both interleaved (a projection k every
 * four GEMV k); 5 mode 0 in mode 4's loop; 4 interleaved with 8 x 32 tiles.
 * Build: gcc -O3 -mavx512f -mfma -o overlap overlap.c
 *   (W_hh in L2: add -DK=256 -DNBLK=8 -DNPAN=32)
 * Run: ./overlap MODE [STEPS]; prints the best of five runs, us a step.
 * Results on the EPYC guest: benchmarks/README.md. */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifndef K
#define K 512
#endif
#define G 4
#ifndef NBLK
#define NBLK 32
#endif
#ifndef NPAN
#define NPAN 128
#endif
#define M 16
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
static float *Whh,*Wih,*X,*C,*h,*out;
/* projection of one k' for panel p, 16 rows: acc[m] += X[m][k'] * Wih[p][k'] */
#define PROJ_K(kk) do{ __m512 wv=_mm512_load_ps(wp+(size_t)(kk)*16); \
  for(int m=0;m<M;m++) pacc[m]=_mm512_fmadd_ps(wv,_mm512_set1_ps(X[m*K+(kk)]),pacc[m]); }while(0)
/* the GEMV's step k: all four gates of a block's 16 units */
#define GEMV_K(w, k) do { __m512 hb=_mm512_set1_ps(h[k]); const float*pp=(w)+(size_t)(k)*64; \
  a0=_mm512_fmadd_ps(_mm512_load_ps(pp),hb,a0);a1=_mm512_fmadd_ps(_mm512_load_ps(pp+16),hb,a1); \
  a2=_mm512_fmadd_ps(_mm512_load_ps(pp+32),hb,a2);a3=_mm512_fmadd_ps(_mm512_load_ps(pp+48),hb,a3); } while(0)
#define GEMV_STORE(b) do { _mm512_store_ps(out+(b)*64,a0);_mm512_store_ps(out+(b)*64+16,a1); \
  _mm512_store_ps(out+(b)*64+32,a2);_mm512_store_ps(out+(b)*64+48,a3); } while(0)
static void gemv_block(int b){
  const float *w=Whh+(size_t)b*K*G*16; __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0;
  for(int k=0;k<K;k++) GEMV_K(w, k);
  GEMV_STORE(b);
}
static void proj_panel(int p){
  const float *wp=Wih+(size_t)p*K*16; __m512 pacc[M]; for(int m=0;m<M;m++)pacc[m]=_mm512_setzero_ps();
  for(int k=0;k<K;k++) PROJ_K(k);
  for(int m=0;m<M;m++) _mm512_store_ps(C+(size_t)m*NPAN*16+p*16,pacc[m]);
}
/* interleaved: GEMV block b with quarter q of panel p (k' = q*K/4 .. (q+1)*K/4) */
static void gemv_block_ilv(int b,int p,int q,__m512*pacc_io){
  const float *w=Whh+(size_t)b*K*G*16; __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0;
  const float *wp=Wih+(size_t)p*K*16; __m512 pacc[M]; for(int m=0;m<M;m++)pacc[m]=pacc_io[m];
  int kq=q*(K/4);
  for(int k=0;k<K;k+=4){
    for(int u=0;u<4;u++) GEMV_K(w, k+u);
    PROJ_K(kq+k/4);
  }
  for(int m=0;m<M;m++)pacc_io[m]=pacc[m];
  GEMV_STORE(b);
}

static void proj8x2_panel_ilv(int b,const float*wp,const float*Xr,__m512*pacc_io,int kq){
  const float *w=Whh+(size_t)b*K*G*16; __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0;
  __m512 pacc[16]; for(int m=0;m<16;m++)pacc[m]=pacc_io[m];
  for(int k=0;k<K;k+=4){
    for(int u=0;u<4;u++) GEMV_K(w, k+u);
    if(wp){ int kk=kq+k/4; __m512 w0=_mm512_load_ps(wp+(size_t)kk*32),w1=_mm512_load_ps(wp+(size_t)kk*32+16);
      for(int m=0;m<8;m++){ __m512 xb=_mm512_set1_ps(Xr[m*K+kk]); pacc[2*m]=_mm512_fmadd_ps(w0,xb,pacc[2*m]); pacc[2*m+1]=_mm512_fmadd_ps(w1,xb,pacc[2*m+1]);} }
  }
  for(int m=0;m<16;m++)pacc_io[m]=pacc[m];
  GEMV_STORE(b);
}
static void newh(){ for(int k=0;k<K;k++) h[k]=0.5f+1e-3f*out[k]; }
int main(int argc,char**argv){
  int mode=atoi(argv[1]); int steps=argc>2?atoi(argv[2]):400;
  Whh=aligned_alloc(64,(size_t)NBLK*K*G*16*4); Wih=aligned_alloc(64,(size_t)NPAN*K*16*4);
  X=aligned_alloc(64,M*K*4); C=aligned_alloc(64,(size_t)M*NPAN*16*4); h=aligned_alloc(64,K*4); out=aligned_alloc(64,NBLK*64*4);
  for(size_t i=0;i<(size_t)NBLK*K*G*16;i++)Whh[i]=1e-3f*(i%97);
  for(size_t i=0;i<(size_t)NPAN*K*16;i++)Wih[i]=1e-3f*(i%89);
  for(int i=0;i<M*K;i++)X[i]=0.01f*(i%13);
  for(int k=0;k<K;k++)h[k]=0.5f;
  double best=1e9;
  for(int rep=0;rep<5;rep++){
  double t0=now();
  for(int s=0;s<steps;s++){
    int fwd=s&1; int pbase=(s%16)*(NPAN/16);
    if(mode==0||mode==2) for(int i=0;i<NBLK;i++) gemv_block(fwd?i:NBLK-1-i);
    if(mode==1||mode==2) for(int i=0;i<NPAN/16;i++) proj_panel(pbase+i);
    if(mode==3){ __m512 pacc[M]; for(int m=0;m<M;m++)pacc[m]=_mm512_setzero_ps();
      for(int i=0;i<NBLK;i++){ int BPP=NBLK/(NPAN/16); int q=i%BPP, p=pbase+i/BPP; if(q==0) for(int m=0;m<M;m++)pacc[m]=_mm512_setzero_ps();
        gemv_block_ilv(fwd?i:NBLK-1-i,p,q,pacc);
        if(q==BPP-1) for(int m=0;m<M;m++) _mm512_store_ps(C+(size_t)m*NPAN*16+p*16,pacc[m]); } }
    if(mode==4||mode==5){ __m512 pacc[16]; for(int m=0;m<16;m++)pacc[m]=_mm512_setzero_ps(); int PPS=NPAN/2/8; int pb=(s%8)*PPS; int BPP=NBLK/PPS;
      for(int i=0;i<NBLK;i++){ int q=i%BPP, p=pb+i/BPP; if(q==0) for(int m=0;m<16;m++)pacc[m]=_mm512_setzero_ps();
        proj8x2_panel_ilv(fwd?i:NBLK-1-i, mode==4?Wih+(size_t)p*K*32:NULL, X, pacc, q*(K/4));
        if(q==BPP-1) for(int m=0;m<8;m++){ _mm512_store_ps(C+(size_t)m*NPAN*16+p*32,pacc[2*m]);_mm512_store_ps(C+(size_t)m*NPAN*16+p*32+16,pacc[2*m+1]);} } }
    newh();
  }
  double t=(now()-t0)/steps*1e6; if(t<best)best=t;}
  printf("mode %d: %.2f us/step\n",mode,best);
  return 0;
}
